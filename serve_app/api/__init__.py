"""The HTTP API: the app factory `create_app`, one router per concern, content negotiation in one module."""

from serve_app.api.app import create_app

__all__ = ["create_app"]
