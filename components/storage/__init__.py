"""Publishing outputs atomically, writing them as bounded Parquet shards, and their digests."""
from components.storage.atomic import staged_dir
from components.storage.digest import code_digest, file_md5
from components.storage.shards import ShardWriter

__all__ = ["ShardWriter", "code_digest", "file_md5", "staged_dir"]
