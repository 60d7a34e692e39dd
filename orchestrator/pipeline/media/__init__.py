"""The media layer: opening input videos and cutting clips out of them."""
