"""Bytes in, arrays out: one module per modality. No network code is imported here."""
