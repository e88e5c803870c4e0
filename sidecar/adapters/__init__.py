"""Thin edges to third parties: the Docker API (the only module importing docker), certbot runs, ARI, the nginx installer."""
