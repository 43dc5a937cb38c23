"""Publishing outputs so that readers never see a half-written one."""
from components.storage.atomic import staged_dir

__all__ = ["staged_dir"]
