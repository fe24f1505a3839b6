"""LoRA: a trainable low-rank update beside chosen Linear layers of the frozen LLM, computed by PEFT's LoRA layers.

For each target Linear ``W`` [out, in] the attached model computes

    h = W x + (alpha / r) * B A dropout(x),    A: [r, in], B: [out, r]

A is initialised like PEFT (kaiming-uniform, a = sqrt(5)) and B to zeros, so a fresh adapter changes nothing.

The adapter owns A and B (``state_dict``, save and load need no model). ``attach`` wraps each target in a
``peft.tuners.lora.Linear`` that uses these very modules; ``detach`` puts the original Linear objects back, so the
model is then exactly the base model again. While attached, A and B are also submodules of the model.
The dropout follows the adapter's train/eval mode (``adapter.train()``), not the model's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel

from .base import Adapter, AdapterError

PEFT_ADAPTER_NAME = "default"


def _key(path: str) -> str:
    """Module path -> ModuleDict key ("." is not allowed there; "-" never occurs in Python attribute names)."""
    return path.replace(".", "-")


class _AdapterDropout(nn.Module):
    """Dropout with probability ``p`` that is active while its owner adapter is in train mode."""

    def __init__(self, p: float, owner: nn.Module):
        super().__init__()
        self.p = p
        object.__setattr__(self, "_owner", owner)  # a plain reference: the adapter must not become a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=self._owner.training) if self.p > 0 else x

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LoRA(Adapter):
    """Low-rank updates (A_t: [r, in_t], B_t: [out_t, r]) for the Linear layers ``targets`` of one model.

    ``targets`` maps a module path in the model (``"model.layers.0.self_attn.q_proj"``) to ``[in_features,
    out_features]``; ``target_modules`` records the layer names the targets were chosen by (``for_model``).
    """

    method = "lora"

    def __init__(
        self,
        targets: dict[str, list[int]],
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.05,
        target_modules: Sequence[str] = ("q_proj", "v_proj"),
    ):
        super().__init__()
        if not targets:
            raise AdapterError("a LoRA needs at least one target layer (use LoRA.for_model)")
        if rank < 1:
            raise AdapterError(f"LoRA rank must be at least 1, got rank={rank}")
        if not 0.0 <= dropout < 1.0:
            raise AdapterError(f"LoRA dropout must be in [0, 1), got dropout={dropout}")
        self.targets = {path: [int(n) for n in shape] for path, shape in targets.items()}
        if any(len(shape) != 2 or min(shape) < 1 for shape in self.targets.values()):
            raise AdapterError(f"each LoRA target needs [in_features, out_features] > 0, got {targets}")
        if len({_key(p) for p in self.targets}) != len(self.targets):
            raise AdapterError(f"LoRA target paths collide once '.' is replaced by '-': {list(self.targets)}")
        self.rank, self.alpha, self.dropout = int(rank), float(alpha), float(dropout)
        self.target_modules = list(target_modules)
        self.A = nn.ModuleDict(
            {_key(p): nn.utils.skip_init(nn.Linear, i, self.rank, bias=False) for p, (i, _) in self.targets.items()}
        )
        self.B = nn.ModuleDict(
            {_key(p): nn.utils.skip_init(nn.Linear, self.rank, o, bias=False) for p, (_, o) in self.targets.items()}
        )
        self.reset_parameters(seed=0)
        self._dropout = _AdapterDropout(self.dropout, self)
        self._injected: list[tuple[nn.Module, str, nn.Module, nn.Module]] = []  # (parent, name, original, lora layer)

    def config(self) -> dict[str, Any]:
        return {
            "targets": {p: list(shape) for p, shape in self.targets.items()},
            "rank": self.rank,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "target_modules": list(self.target_modules),
        }

    def factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Module path -> (A [r, in], B [out, r]), the adapter's own parameters."""
        return {path: (self.A[_key(path)].weight, self.B[_key(path)].weight) for path in self.targets}

    @property
    def scaling(self) -> float:
        """alpha / r, the factor on B A x."""
        return self.alpha / self.rank

    @classmethod
    def for_model(
        cls,
        model: PreTrainedModel,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.05,
        target_modules: Sequence[str] = ("q_proj", "v_proj"),
        seed: int = 0,
    ) -> LoRA:
        """A LoRA on every ``nn.Linear`` of ``model`` whose name ends in one of ``target_modules``, initialised as
        in ``reset_parameters(seed)``."""
        from peft.tuners.lora import LoraLayer

        if any(isinstance(m, LoraLayer) for m in model.modules()):
            raise AdapterError("this model already has LoRA layers in it (an attached adapter?); detach it first")
        names = set(target_modules)
        linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
        targets = {
            name: [m.in_features, m.out_features] for name, m in linears.items() if name.rsplit(".", 1)[-1] in names
        }
        if not targets:
            available = sorted({name.rsplit(".", 1)[-1] for name in linears})
            raise AdapterError(
                f"no nn.Linear in {type(model).__name__} is named {', '.join(sorted(names)) or '(nothing)'}; "
                f"choose target_modules among its Linear layer names: {', '.join(available)}"
            )
        lora = cls(targets, rank, alpha, dropout, target_modules)
        lora.reset_parameters(seed)
        return lora

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        """PEFT's initialisation: A ~ kaiming-uniform(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)), B = 0.

        Drawn from ``torch.Generator().manual_seed(seed)`` in target order: deterministic, global RNG untouched.
        """
        g = torch.Generator().manual_seed(seed)
        for key in self.A:
            weight = self.A[key].weight
            values = torch.empty(weight.shape, dtype=torch.float32)
            nn.init.kaiming_uniform_(values, a=math.sqrt(5), generator=g)
            weight.copy_(values)
            self.B[key].weight.zero_()

    def check_model(self, model: PreTrainedModel) -> None:
        from peft.tuners.lora import LoraLayer

        problems = []
        for path, (n_in, n_out) in self.targets.items():
            try:
                module = model.get_submodule(path)
            except AttributeError:
                problems.append(f"{path} is missing")
                continue
            if isinstance(module, LoraLayer):
                module = module.get_base_layer()
            if not isinstance(module, nn.Linear):
                problems.append(f"{path} is a {type(module).__name__}, not an nn.Linear")
            elif (module.in_features, module.out_features) != (n_in, n_out):
                problems.append(
                    f"{path} maps {module.in_features} -> {module.out_features} features, the LoRA {n_in} -> {n_out}"
                )
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise AdapterError(
                f"this LoRA was trained for a different model than {type(model).__name__}: "
                f"{'; '.join(problems[:3])}{more}. Use it with the model it was trained on "
                "(the 'model' in its run's config.json)"
            )

    def _hook(self, model: PreTrainedModel) -> None:
        """Wrap each target Linear in a ``peft.tuners.lora.Linear`` whose lora_A/lora_B/lora_dropout are ours."""
        from peft import LoraConfig
        from peft.tuners.lora import Linear as LoraLinear
        from peft.tuners.lora import LoraLayer

        found = []
        for path in self.targets:
            parent_name, _, name = path.rpartition(".")
            parent = model.get_submodule(parent_name)
            original = getattr(parent, name)
            if isinstance(original, LoraLayer):
                raise AdapterError(f"{path} already has a LoRA layer (another adapter is attached); detach it first")
            own = self.A[_key(path)].weight.device
            if original.weight.device != own:
                raise AdapterError(
                    f"the LoRA weights are on {own} but {path} is on {original.weight.device}; "
                    "move the adapter to the model's device first (adapter.to(model.device))"
                )
            found.append((parent, name, original, path))
        cfg = LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, bias="none")
        cfg.init_lora_weights = False  # PEFT's own A/B are thrown away (and made on the meta device, no RNG used)
        for parent, name, original, path in found:
            with torch.device("meta"):
                layer = LoraLinear(original, PEFT_ADAPTER_NAME, config=cfg, r=self.rank, lora_alpha=self.alpha)
            layer.lora_A[PEFT_ADAPTER_NAME] = self.A[_key(path)]
            layer.lora_B[PEFT_ADAPTER_NAME] = self.B[_key(path)]
            layer.lora_dropout[PEFT_ADAPTER_NAME] = self._dropout
            setattr(parent, name, layer)
            self._injected.append((parent, name, original, layer))

    def _unhook(self) -> None:
        """Put the original Linear objects back where they were."""
        while self._injected:
            parent, name, original, _ = self._injected.pop()
            setattr(parent, name, original)

    @contextmanager
    def bypassed(self) -> Iterator[None]:
        """While attached: the LoRA layers return W x only (PEFT's ``disable_adapters`` flag, set directly so that
        no ``requires_grad`` changes, unlike ``enable_adapters``); the flags are restored on exit."""
        layers = [layer for *_, layer in self._injected]
        saved = [layer._disable_adapters for layer in layers]
        for layer in layers:
            layer._disable_adapters = True
        try:
            yield
        finally:
            for layer, flag in zip(layers, saved, strict=True):
                layer._disable_adapters = flag
