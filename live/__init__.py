"""Live streaming of the avatar (serve.sh): online audio features, per-connection sessions, the render
engine and the web server."""
