"""Scale-out on an existing Ray cluster: each replica's env worker is hosted by a Ray actor on some node.

The executor, its stage pools, retry rules and writer are the same as on one machine; only how a replica's
worker is made differs (`replicas.RayWorkers`, after `placement.plan_replicas`). Ray is an optional extra,
imported only here.
"""
