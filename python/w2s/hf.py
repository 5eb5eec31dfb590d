"""A Hugging Face (transformers) model as a w2s scorer, for the tuned or untuned role.

    from w2s.hf import TransformersScorer
    tuned = TransformersScorer("path/to/tuned-folder", template="chat:Write a positive review.||{prompt}")
    searcher = w2s.Searcher("gemma-3-270m", tuned, TransformersScorer("path/to/base-folder"))

It needs PyTorch and transformers (`pip install torch transformers`); the search itself
never does. The scorer computes what w2s's own scorers compute: log p(response | the
prompt through the template), plus the end-of-sequence term for an ended response. The
response is tokenised together with the prompt's end, and a token that merges across
the boundary belongs to the response, as in w2s's local and remote scorers; so a folder
and the GGUF file made from it give the same guide values (within float tolerance).

Templates are w2s's: text with `{prompt}`, or `chat:USER||ASSISTANT` (either part may
hold `{prompt}`), rendered through the tokenizer's own chat template.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

__all__ = ["TransformersScorer"]

PLACEHOLDER = "{prompt}"


class TransformersScorer:
    """Scores responses with a causal language model of transformers.

    `model`: a folder or model name for `from_pretrained`, or a loaded model (then give
    `tokenizer` too). `template`: how the prompt is given to it (default `{prompt}`).
    `dtype`: the torch dtype to load in (default float32). `batch_size`: responses per
    forward pass. `end_token`: the token whose log-probability ends an ended response
    (default: the tokenizer's end-of-sequence token). w2s's llama.cpp scorer uses the
    model's end-of-turn token for a `chat:` template, which llama.cpp finds by its text
    when the file names none (SmolLM2's files name none, and it takes `<|endoftext|>`);
    give that token here to match it exactly.
    """

    def __init__(
        self,
        model: Any,
        template: str = PLACEHOLDER,
        *,
        tokenizer: Any = None,
        dtype: Any = None,
        device: Optional[str] = None,
        batch_size: int = 8,
        end_token: Optional[str] = None,
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "w2s.hf needs PyTorch and transformers: pip install torch transformers"
            ) from e
        if PLACEHOLDER not in template:
            raise ValueError(f"template {template!r} has no {PLACEHOLDER}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self._torch = torch
        if isinstance(model, str):
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForCausalLM.from_pretrained(
                model, dtype=dtype or torch.float32
            )
            self.name = model
        else:
            if tokenizer is None:
                raise ValueError("a loaded model needs its tokenizer: tokenizer=...")
            self.model, self.tokenizer = model, tokenizer
            self.name = type(model).__name__
        if device is not None:
            self.model.to(device)
        self.model.eval()
        self.template = template
        self.batch_size = batch_size
        # Whether tokenising adds BOS itself: a chat template's leading BOS text is then
        # dropped, so it is never doubled (as w2s's llama.cpp scorer does).
        first = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        self._adds_bos = bool(first) and first[0] == self.tokenizer.bos_token_id
        if template.startswith("chat:") and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"{self.name}: template {template!r} needs a chat template, and the tokenizer has none")
        if end_token is not None:
            tid = self.tokenizer.convert_tokens_to_ids(end_token)
            unknown = tid == self.tokenizer.unk_token_id and end_token != self.tokenizer.unk_token
            if tid is None or unknown:
                raise ValueError(f"{self.name}: end_token {end_token!r} is not one token of the vocabulary")
            self.eos_id = tid
        else:
            eos = self.tokenizer.eos_token_id
            self.eos_id = eos[0] if isinstance(eos, (list, tuple)) else eos

    def render(self, prompt: str) -> str:
        """The text the model reads before the response."""
        if not self.template.startswith("chat:"):
            return self.template.replace(PLACEHOLDER, prompt)
        user, _, assistant = self.template[len("chat:"):].partition("||")
        messages = [{"role": "user", "content": user.replace(PLACEHOLDER, prompt)}]
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        bos = self.tokenizer.bos_token
        if bos and text.startswith(bos) and self._adds_bos:
            text = text[len(bos):]
        return text + assistant.replace(PLACEHOLDER, prompt)


    def _split(self, context: str, text: str) -> tuple[List[int], int]:
        """Token ids of context + text and where the response's tokens start: after the
        longest run of tokens the context alone tokenises to."""
        tok = self.tokenizer
        alone = tok(context, add_special_tokens=True)["input_ids"]
        full = tok(context + text, add_special_tokens=True)["input_ids"]
        start = 0
        while start < min(len(alone), len(full)) and alone[start] == full[start]:
            start += 1
        if start == 0:
            raise ValueError(f"{self.name}: the prompt tokenises to nothing before the response")
        return full, start

    def token_logprobs(self, prompt: str, text: str, ended: bool = False) -> List[float]:
        """log p of each response token (and of the end token where `ended`)."""
        return self._score_rows(prompt, [text], [ended])[0]

    def score(self, prompt: str, texts: List[str], ended: List[bool]) -> Sequence[float]:
        """log p(text | prompt) for each text, the end term included where `ended`."""
        if len(texts) != len(ended):
            raise ValueError("texts and ended differ in length")
        return [sum(r) for r in self._score_rows(prompt, texts, ended)]

    def _score_rows(self, prompt: str, texts: List[str], ended: List[bool]) -> List[List[float]]:
        torch = self._torch
        context = self.render(prompt)
        rows = []
        for text, end in zip(texts, ended):
            ids, start = self._split(context, text)
            if end:
                if self.eos_id is None:
                    raise ValueError(f"{self.name}: an ended response needs an end token; the tokenizer has none")
                ids = ids + [self.eos_id]
            rows.append((ids, start))
        out: List[List[float]] = []
        pad = self.tokenizer.pad_token_id
        pad = self.eos_id if pad is None else pad
        for i in range(0, len(rows), self.batch_size):
            batch = rows[i:i + self.batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad if pad is not None else 0, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for j, (ids, _) in enumerate(batch):
                input_ids[j, : len(ids)] = torch.tensor(ids)
                mask[j, : len(ids)] = 1
            device = next(self.model.parameters()).device
            with torch.no_grad():
                logits = self.model(
                    input_ids=input_ids.to(device), attention_mask=mask.to(device)
                ).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            for j, (ids, start) in enumerate(batch):
                out.append([
                    float(logp[j, t - 1, ids[t]]) for t in range(start, len(ids))
                ])
        return out

    def __repr__(self) -> str:
        return f"TransformersScorer({self.name!r}, template={self.template!r})"
