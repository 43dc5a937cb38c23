"""Publishing outputs atomically, and writing them as bounded Parquet shards."""
from components.storage.atomic import staged_dir
from components.storage.shards import ShardWriter

__all__ = ["ShardWriter", "staged_dir"]
