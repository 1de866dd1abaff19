"""Jobs, clusters, progress and the live page: what runs rv2dist for a user."""
