"""Model folders can arrive by `dvc pull` from a shared remote: weights load from safetensors only, so a pickled
`pytorch_model.bin` planted where the weights belong is refused and never unpickled."""
from __future__ import annotations

import pickle

import pytest
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig

from components.model.load import load_pretrained
from tests.unit.test_classifiers import WritesMarker


@pytest.mark.parametrize("auto_class", [AutoModelForCausalLM, AutoModelForSequenceClassification])
def test_a_pickled_model_folder_is_refused_and_never_unpickled(tmp_path, auto_class):
    folder, marker = tmp_path / "model", tmp_path / "marker"
    LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2, num_labels=1).save_pretrained(folder)
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"model.embed_tokens.weight": WritesMarker(marker)}))
    with pytest.raises(OSError, match="safetensors"):
        load_pretrained(auto_class, folder)
    assert not marker.exists(), "loading the model folder ran the pickle's code"
    pickle.loads((folder / "pytorch_model.bin").read_bytes())  # the payload is live: unpickling it runs
    assert marker.exists()


def test_a_safetensors_model_folder_loads(tmp_path):
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert load_pretrained(AutoModelForCausalLM, tmp_path).config.hidden_size == 16
