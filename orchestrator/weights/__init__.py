"""Model weights: which a project needs, where they come from, and whether they are here.

    model_download.yaml ──download_config──▶ models ──requirements──▶ (name, files, revision)
                                                                           │
        hf / s3://bucket/prefix / a directory ──sources──▶ cache: <root>/<org>/<repo>.partial/
                                                                           │ rename, then manifest last
                                                                           ▼
                            preflight (orchestrator run) ◀── <root>/<org>/<repo>/.orchestrator-manifest.json
"""
