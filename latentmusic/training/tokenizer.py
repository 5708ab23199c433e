"""A word-level tokenizer built from a data set's captions, for text encoders trained from scratch.

No pretrained tokenizer can be downloaded in an offline setting, and captions of a music corpus use a
few hundred words, so a word-level vocabulary built with the `tokenizers` library is enough. Digits are
split one by one so that an unseen tempo ("97 BPM") is still made of known tokens. The result is a
`transformers.PreTrainedTokenizerFast`: it saves with `save_pretrained` and loads with
`AutoTokenizer.from_pretrained(folder)` like any other.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


def build_caption_tokenizer(
    captions: Iterable[str], model_max_length: int = 64, min_frequency: int = 1
) -> PreTrainedTokenizerFast:
    """Train a lower-cased word-level tokenizer on captions.

    Args:
        captions: The texts to build the vocabulary from.
        model_max_length: Longest token sequence the text encoder accepts; longer prompts are
            truncated (with a warning from the pipeline).
        min_frequency: Words seen fewer times become `<unk>`.

    Returns:
        A fast tokenizer with `<pad>` (id 0, as T5 expects), `</s>` appended to every sequence, and
        `<unk>` for unknown words.
    """
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    trainer = trainers.WordLevelTrainer(special_tokens=[PAD, EOS, UNK], min_frequency=min_frequency)
    tokenizer.train_from_iterator(captions, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", special_tokens=[(EOS, tokenizer.token_to_id(EOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=model_max_length,
        padding_side="right",
    )
