"""A tiny Qwen2.5-VL checkpoint built offline, for tests, benchmarks and toy-scale training.

:func:`build_tiny_qwen2_5_vl` writes a folder that ``transformers`` (and so the ``hf:`` backend)
loads like any downloaded Qwen2.5-VL checkpoint: ``config.json`` + ``model.safetensors`` (random
weights, ~0.2 M parameters: text hidden size 64, 2 layers; vision depth 1), a byte-level BPE
tokenizer trained on the fly with the Qwen chat template and special tokens, and a Qwen2-VL
image processor (14 px patches merged 2x2: a 224x224 image becomes 64 image tokens).

Nothing is downloaded. The same ``corpus`` and ``seed`` give byte-identical weights and
tokenizer files (with the same package versions). The weights are untrained: the model
answers with random text until it is trained (see ``reference_training/``).

The processor itself is not saved as one object (``save_pretrained`` of the Qwen2.5-VL
processor needs a video processor, which needs torchvision); its two parts are saved instead,
which is what the Auto classes read back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

#: Special tokens of the Qwen2/Qwen2.5-VL vocabulary, in their usual order.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
#: Reasoning tags kept as single ordinary tokens (decoded like text, never stripped).
REASONING_TOKENS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>")

#: The Qwen chat layout: ``<|im_start|>role\n...<|im_end|>\n``; each image becomes
#: ``<|vision_start|><|image_pad|><|vision_end|>`` (the processor expands the pad to one token
#: per merged patch); a default system turn is added when the chat has none.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def default_corpus(seed: int = 0, n_reports: int = 400) -> Iterator[str]:
    """Tokenizer training text: phantom reports with random findings, task prompts, answer forms."""
    import numpy as np

    from cxbench.data.phantom_reports import write_report
    from cxbench.labels import CHANGE_LABELS, DISEASE_SYNONYMS, DISEASES_14
    from cxbench.tasks import builtin_task_dir

    rng = np.random.default_rng(seed)
    sides, zones = ("left", "right", "bilateral"), ("upper", "middle", "lower")
    changes = ("worsened", "improved", "stable", "new", "resolved")
    for _ in range(n_reports):
        findings = []
        for label in rng.choice(len(DISEASES_14), size=int(rng.integers(0, 4)), replace=False):
            side, zone = str(rng.choice(sides)), str(rng.choice(zones))
            findings.append(
                {
                    "label": DISEASES_14[int(label)],
                    "severity": int(rng.integers(1, 4)),
                    "side": side,
                    "zone": zone,
                    "region": f"{side} {zone} lung zone",
                }
            )
        compared = None
        if findings and rng.random() < 0.3:
            compared = [{"label": f["label"], "change": str(rng.choice(changes))} for f in findings]
        report = write_report(findings, rng, compared)
        yield f"Findings: {report['findings']}\nImpression: {report['impression']}"
    for path in sorted(builtin_task_dir().glob("*.yaml")):
        yield path.read_text(encoding="utf-8")
    for label in DISEASES_14:
        names = ", ".join(DISEASE_SYNONYMS[label])
        yield f"Is there a {label} in this chest X-ray? Yes. No. {names}."
        yield f"<think>The image shows {label}.</think><answer>{label}</answer>"
    yield " ".join(CHANGE_LABELS) + " A) B) C) D) [12, 34, 56, 78] 0 1 2 3 4 5 6 7 8 9"


def _train_tokenizer(corpus: Iterable[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.add_tokens(list(REASONING_TOKENS))
    return tokenizer


def build_tiny_qwen2_5_vl(
    out_dir: str | Path,
    corpus: Iterable[str] | None = None,
    seed: int = 0,
    *,
    vocab_size: int = 1200,
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_depth: int = 1,
    max_image_tokens: int = 64,
    vision_hidden_size: int = 32,
) -> Path:
    """Build and save a tiny random Qwen2.5-VL checkpoint in ``out_dir``; return the folder.

    ``corpus`` (texts) trains the tokenizer; by default :func:`default_corpus` (phantom reports
    with random findings, the built-in task prompts, answer forms). ``seed`` fixes the default
    corpus and the weights. ``max_image_tokens`` bounds the image tokens per image (the image
    processor's ``max_pixels`` is that many merged 28x28 patches). ``vision_hidden_size`` is the
    width of the vision tower (16 per attention head); the defaults give the ~0.2 M-parameter test
    model, ``reference_training``'s toy run uses a wider and deeper one.
    """
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    try:  # transformers 5: the PIL backend works without torchvision
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil as ImageProcessor,
        )
    except ImportError:  # transformers 4: the slow processor is PIL based
        from transformers import Qwen2VLImageProcessor as ImageProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = list(default_corpus(seed) if corpus is None else corpus)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(texts, vocab_size),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    heads = max(2, hidden_size // 16)
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": max(1, heads // 2),
            "max_position_embeddings": 8192,
            # multimodal RoPE: temporal/height/width sections sum to half the head size
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": _mrope(hidden_size // heads),
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": vision_hidden_size,
            "intermediate_size": 2 * vision_hidden_size,
            "num_heads": max(2, vision_hidden_size // 16),
            "out_hidden_size": hidden_size,
            "fullatt_block_indexes": list(range(vision_depth)),
            "window_size": 112,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.do_sample = False
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    patch_area = 28 * 28  # one merged patch: 2x2 patches of 14 px
    ImageProcessor(min_pixels=4 * patch_area, max_pixels=max_image_tokens * patch_area).save_pretrained(out)
    return out


def _mrope(head_dim: int) -> list[int]:
    half = head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]
