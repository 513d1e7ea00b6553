"""desync-store-s3: ``s3+http://`` and ``s3+https://`` chunk and index stores (boto3)."""

from __future__ import annotations

__version__ = "0.1.0"
