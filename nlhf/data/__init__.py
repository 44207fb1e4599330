"""nlhf.data: preference data in one schema, from the formats people already have.

* :mod:`nlhf.data.schema` -- :class:`PreferenceExample` (prompt, first, second,
  ``label = P(first > second)``), :class:`PromptExample`, :class:`Message`.
* :mod:`nlhf.data.load` -- :func:`load_preferences`, :func:`load_prompts`,
  :func:`save_preferences` (files and Hugging Face datasets; formats in
  :mod:`nlhf.data.formats`, HH-RLHF transcripts in :mod:`nlhf.data.hh`, raw readers in
  :mod:`nlhf.data.readers`); bad rows raise :class:`PreferenceDataError` naming file,
  row and field (:mod:`nlhf.data.errors`).
* :mod:`nlhf.data.truncation` -- the documented truncation rule.
* :mod:`nlhf.data.collate` -- policy side: :func:`tokenize_pair`, :class:`PreferenceBatch`,
  :class:`PairCollator`, :class:`PromptBatch`, :class:`PromptCollator`.
* :mod:`nlhf.data.judge_inputs` -- judge side: :func:`encode_triple`,
  :func:`encode_single`, :func:`collate_encoded`, :class:`JudgeCollator`.

Importing this package imports neither torch, transformers nor datasets.
"""

from nlhf.data.collate import (
    PairCollator,
    PreferenceBatch,
    PromptBatch,
    PromptCollator,
    TokenizedPair,
    collate_pairs,
    collate_prompts,
    completion_ids,
    prompt_ids,
    render_prompt,
    tokenize_pair,
    tokenize_prompt,
)
from nlhf.data.errors import REASONS, PreferenceDataError
from nlhf.data.formats import FORMATS, detect_format
from nlhf.data.hh import hh_transcript, parse_hh_transcript, split_hh_pair
from nlhf.data.judge_inputs import (
    EncodedInput,
    JudgeBatch,
    JudgeCollator,
    JudgePairBatch,
    collate_encoded,
    encode_single,
    encode_triple,
)
from nlhf.data.load import PreferenceDataset, PromptDataset, load_preferences, load_prompts, save_preferences
from nlhf.data.schema import (
    Message,
    PreferenceExample,
    Prompt,
    PromptExample,
    prompt_messages,
    prompt_text,
)
from nlhf.data.truncation import keep_first, keep_last, segment_budgets, water_fill

__all__ = [
    "FORMATS",
    "REASONS",
    "EncodedInput",
    "JudgeBatch",
    "JudgeCollator",
    "JudgePairBatch",
    "Message",
    "PairCollator",
    "PreferenceBatch",
    "PreferenceDataError",
    "PreferenceDataset",
    "PreferenceExample",
    "Prompt",
    "PromptBatch",
    "PromptCollator",
    "PromptDataset",
    "PromptExample",
    "TokenizedPair",
    "collate_encoded",
    "collate_pairs",
    "collate_prompts",
    "completion_ids",
    "detect_format",
    "encode_single",
    "encode_triple",
    "hh_transcript",
    "keep_first",
    "keep_last",
    "load_preferences",
    "load_prompts",
    "parse_hh_transcript",
    "prompt_ids",
    "prompt_messages",
    "prompt_text",
    "render_prompt",
    "save_preferences",
    "segment_budgets",
    "split_hh_pair",
    "tokenize_pair",
    "tokenize_prompt",
    "water_fill",
]
