"""schemathesis hooks of scripts/api-fuzz: snapshot imports are raw bytes (application/zstd)."""
import schemathesis


@schemathesis.serializer("application/zstd")
def zstd(ctx, value):
    if isinstance(value, bytes):
        return value
    return str(value).encode()
