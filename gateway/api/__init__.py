"""The HTTP and WebSocket edge: the only package that imports FastAPI. Thin: parse, call, render."""
