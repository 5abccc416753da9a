"""One live session: admission, the upstream connection, the two pumps, the close."""
