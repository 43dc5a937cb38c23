"""Instruction data for supervised fine-tuning: the formats people have → deduplicated, decontaminated,
chat-templated and tokenized conversations with the mask of the tokens the assistant says.

- readers.py: Alpaca, OpenAI/ShareGPT `messages`, OpenAssistant trees → (role, content) turns; bad input;
- examples.py: one `messages` shape, the turn-order rule, stable ids;
- sources.py: a source's files (local, globs, s3://, https://) → examples, with a tally per file;
- decontaminate.py: GPT-3-style n-gram overlap with evaluation sets;
- selfinstruct.py: optional synthetic instructions from a teacher model, Alpaca's self-instruct recipe;
- chat.py: chat template → input_ids and assistant_mask;
- build.py: the steps in order, and the output files; report.py: what people read.
"""
from components.sft_data.build import SCHEMA, build_sft_data
from components.sft_data.chat import Encoded, TemplateError, encode, load_tokenizer, render
from components.sft_data.decontaminate import Contamination, Decontaminator, EvalItem, read_eval_set
from components.sft_data.examples import Example, example_id, normalise, order_problem
from components.sft_data.params import DecontaminationParams, EvalSet, SftDataParams, SftSource
from components.sft_data.readers import BadFile, BadRecord
from components.sft_data.sources import SftDataError, read_source

__all__ = ["SCHEMA", "BadFile", "BadRecord", "Contamination", "DecontaminationParams", "Decontaminator",
           "Encoded", "EvalItem", "EvalSet", "Example", "SftDataError", "SftDataParams", "SftSource",
           "TemplateError", "build_sft_data", "encode", "example_id", "load_tokenizer", "normalise",
           "order_problem", "read_eval_set", "read_source", "render"]
