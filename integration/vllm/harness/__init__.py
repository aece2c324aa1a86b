"""The vLLM suite's helpers: stand-in media, the bucket stand-in, the offline guard, records."""
