"""The base of every stage's parameter model."""
from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo in params.yaml must fail, not be ignored); values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
