"""desync-mount-fuse: ``desync mount-index`` over FUSE (blob indexes and .caidx trees)."""
