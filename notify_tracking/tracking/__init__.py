"""Open, click and download tracking: tokens, message rewriting, views, classification."""
