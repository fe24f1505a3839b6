"""Linear gate: the guard's decision read off the LLM's own state; refuse with r* where it fires (docs/gate.md).

    s(x) = w . f_l(x) + b,   q(r | x) = 1[r = r*] if s(x) > 0, else pi(r | x)

f_l(x) is the gate's read-out of decoder layer l's outputs h_l(x)_t on the templated prompt x: ``last``, the state at
its last token, [d]; or ``last+mean``, that state and the mean of h_l(x)_t over the prompt's own positions (its
tokens after the ``head`` leading chat-template tokens that every prompt shares, whose states do not depend on the
prompt), [2d]. pi is the frozen LLM, r* the system's refusal (token ids, ending with the end-of-turn token). So the
gated LLM is the deployed system with its guard replaced by a few thousand numbers on states the LLM computes
anyway: wherever the gate and the guard decide alike its responses are the system's exactly. w and b are fitted
(``fit_gate``), not trained through the LLM: a logistic regression of the guard's flags 1[u(x) >= tau] on f_l(x),
L2-regularised on standardised read-outs.

The LLM is untouched: a forward hook on layer l records h_l . w_last and h_l . w_mean at every position of every
forward while attached (nothing while ``bypassed``); s is linear in the states, so the mean of the second projection
over the own positions is w_mean . mean(h_l). Generation reads s after the prefill (``forced_response``, which needs
the prompts' attention mask) and emits r* on the rows where it fires; teacher-forced scoring (``override_logp``) runs
the prompts once more and replaces those rows' distributions by the one-hot r*.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from .base import AdapterError, attached, decoder_hidden
from .steering import LayerHooked, _hidden_of, check_layer, decoder_layers, own_positions

#: The gate's read-outs of layer l, [d] and [2d] (``GateConfig.readouts``; docs/gate.md §2).
READOUTS = ("last", "last+mean")


class LinearGate(LayerHooked):
    """w: [d] (``readout`` "last") or [2d] ("last+mean": w_last then w_mean), b: [] on the output of decoder layer
    ``layer``; ``refusal_ids``: r* as token ids (non-empty); ``head``: the leading template tokens the mean skips.

    ``num_layers`` (the model's layer count, recorded by ``for_model``) lets ``check_model`` refuse a model of the
    same width but another depth. Fresh, the gate never fires (w = 0, b = 0: s = 0, not > 0)."""

    method = "gate"

    def __init__(
        self,
        hidden_size: int,
        layer: int,
        refusal_ids: list[int],
        num_layers: int | None = None,
        readout: str = "last",
        head: int = 0,
    ):
        super().__init__()
        if hidden_size < 1:
            raise AdapterError(f"a gate needs hidden_size >= 1, got {hidden_size}")
        if layer < 0 or (num_layers is not None and layer >= num_layers):
            raise AdapterError(f"layer {layer} is out of range; choose 0 <= layer < {num_layers or 'num_layers'}")
        if not refusal_ids:
            raise AdapterError("a gate needs the refusal's token ids (r*), got none")
        if readout not in READOUTS or head < 0:
            raise AdapterError(f"a gate reads one of {READOUTS} with head >= 0, got {readout!r} and {head}")
        self.hidden_size, self.layer, self.num_layers = hidden_size, layer, num_layers
        self.readout, self.head = readout, head
        self.refusal_ids = [int(i) for i in refusal_ids]
        self.weight = nn.Parameter(torch.zeros((READOUTS.index(readout) + 1) * hidden_size), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(()), requires_grad=False)
        self._projections: torch.Tensor | None = None  # [B, T, 1 or 2]: h_l . w_last (, h_l . w_mean) per position

    def config(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "layer": self.layer,
            "refusal_ids": self.refusal_ids,
            "num_layers": self.num_layers,
            "readout": self.readout,
            "head": self.head,
        }

    @classmethod
    def for_model(
        cls, model: PreTrainedModel, layer: int, refusal_ids: list[int], readout: str = "last", head: int = 0
    ) -> LinearGate:
        """A gate that never fires, sized for ``model``, at decoder layer ``layer``."""
        d, n = model.get_input_embeddings().embedding_dim, len(decoder_layers(model))
        return cls(d, layer, refusal_ids, n, readout, head)

    def check_model(self, model: PreTrainedModel) -> None:
        check_layer(model, self.hidden_size, self.layer, self.num_layers, "gate")

    def set_weights(self, weight: torch.Tensor, bias: float) -> None:
        """Set w and b (e.g. ``fit_gate``'s on ``readout_features``): w [d], or [2d] = (w_last, w_mean) for
        "last+mean"."""
        if weight.shape != self.weight.shape:
            raise AdapterError(
                f"gate weight of shape {tuple(weight.shape)}; a {self.readout!r} gate needs {tuple(self.weight.shape)}"
            )
        self.weight.data.copy_(weight)
        self.bias.data.fill_(float(bias))

    def _on_output(self, module: nn.Module, args: tuple, output: Any) -> None:
        """Forward hook on layer l: h_l . w_k at every position, [B, T, 1 or 2] (the layer's output is unchanged)."""
        if self._bypassed:
            self._projections = None
            return
        w = self.weight.float().view(-1, self.hidden_size)  # [1 or 2, d]
        self._projections = _hidden_of(output).float() @ w.T

    def _unhook(self) -> None:
        super()._unhook()
        self._projections = None

    def forced_response(self, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """After a forward of left-padded prompts with ``attention_mask`` [B, T'] (its last T columns those of the
        forward): (fires [B] bool, s > 0; r* ids [R]). s = h_l[last] . w_last (+ the mean of h_l . w_mean over the
        own positions: the real tokens after the first ``head``) + b."""
        if self._projections is None:
            return None
        proj = self._projections
        s = proj[:, -1, 0] + self.bias.float()
        if self.readout == "last+mean":
            own = own_positions(attention_mask[:, -proj.shape[1] :].to(proj.device), self.head)
            s = s + (proj[..., 1] * own).sum(-1) / own.sum(-1).clamp(min=1)
        return s > 0, torch.tensor(self.refusal_ids, device=proj.device)

    @torch.no_grad()
    def fires(self, model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """s(x) > 0 for left-padded templated prompts [B, T] -> [B] bool (one forward of the prompts)."""
        with attached(model, self):  # read s before a detach clears it
            decoder_hidden(model, self, input_ids, attention_mask)  # the hook records s (nothing while bypassed)
            forced = self.forced_response(attention_mask)
        return forced[0] if forced is not None else torch.zeros(len(input_ids), dtype=torch.bool)

    def override_logp(self, model: PreTrainedModel, batch: dict[str, Any], logp: torch.Tensor) -> torch.Tensor:
        """The gated q at a teacher-forced batch's loss positions: [N, V] -> [N, V].

        Row i's prompt is its tokens up to the position that predicts its first target token (``collate``'s
        ``pos``); where the gate fires on it, the loss term j positions after that one gets log onehot(r*_j)
        (0 at r*_j, -inf elsewhere; the end-of-turn token past the end of r*): the gated model emits r* whatever
        the tokens it is fed, as in generation. Elsewhere ``logp`` is kept (the base model's, since the gate
        changes nothing else)."""
        row, pos, ids, mask = batch["row"], batch["pos"], batch["input_ids"], batch["attention_mask"]
        start = torch.full((len(ids),), ids.shape[1], dtype=torch.long, device=pos.device).scatter_reduce(
            0, row, pos, reduce="amin"
        )  # [B]: the position of each row's last prompt token
        rows = torch.unique(row)
        prompts = torch.zeros(len(rows), int(start[rows].max()) + 1, dtype=ids.dtype, device=ids.device)
        prompt_mask = torch.zeros_like(prompts)
        for k, i in enumerate(rows.tolist()):  # re-pad each prompt on the left, without its response
            n = int(start[i]) + 1
            prompts[k, -n:], prompt_mask[k, -n:] = ids[i, :n], mask[i, :n]
        fired = torch.zeros(len(ids), dtype=torch.bool, device=pos.device)
        fired[rows] = self.fires(model, prompts, prompt_mask).to(pos.device)
        hit = fired[row]  # [N]
        if not hit.any():
            return logp
        refusal = torch.tensor(self.refusal_ids, device=pos.device)
        j = (pos - start[row])[hit].clamp(max=len(refusal) - 1)  # past r*'s end: its last (end-of-turn) token
        out = logp.clone()
        out[hit] = float("-inf")
        out[hit.nonzero().squeeze(-1), refusal[j]] = 0.0
        return out


def readout_features(states: torch.Tensor, readout: str) -> torch.Tensor:
    """``prompt_states``' [n, 2, d] (last, own mean) at one layer -> the read-out's features: [n, d] or [n, 2d]."""
    return states[:, 0] if readout == "last" else states.flatten(1)


def default_layers(num_layers: int) -> list[int]:
    """The layers a gate is fitted at unless configured: every sixth of the depth (5 layers, fewer on shallow models;
    SmolLM2-135M's 30: 5, 10, 15, 20, 25)."""
    return sorted({num_layers * i // 6 for i in range(1, 6)})


def fit_gate(states: torch.Tensor, flags: torch.Tensor, l2: float, max_iter: int = 200) -> tuple[torch.Tensor, float]:
    """Logistic regression of ``flags`` [n] (0/1) on ``states`` [n, d]: (w [d], b) in the states' own units.

    Minimises mean BCE(z_i . w' + b', flag_i) + l2 |w'|^2 / 2 over standardised states z = (h - mean) / std
    (per feature, std + 1e-6) by L-BFGS from zero, then folds the standardisation in: w = w' / std,
    b = b' - w . mean. Deterministic: no random initialisation, full batch."""
    if states.ndim != 2 or flags.shape != (len(states),):
        raise ValueError(f"fit_gate needs states [n, d] and flags [n], got {tuple(states.shape)}, {tuple(flags.shape)}")
    if not 0 < float(flags.float().mean()) < 1:
        raise ValueError("fit_gate needs prompts the guard flags and prompts it passes; one class is missing")
    x, y = states.double(), flags.double()
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w @ w) / 2
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    weight = (w.detach() / std).float()
    return weight, float(b.detach() - (w.detach() / std) @ mean)
