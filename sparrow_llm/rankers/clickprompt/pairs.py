"""The CTR model over every (user, candidate) pair of a batch, with what reads one side only computed once per side.

A pair's input is the user's field embeddings and the movie's (interleaved in field order). Every layer that is
linear in them splits into a user part plus a movie part, computed once per user and once per movie; a pair
then costs a gather and an add there, and only the later layers run per pair:
  DCNv2   the first cross layer and the MLP's first layer (W x0 = W_user x0_user + W_movie x0_movie); its
          weights are permuted once so that the user's fields come first in x0.
  DeepFM  the first-order weights, the MLP's first layer, and the FM term, whose pairwise sum over fields is
          the user's part + the movie's part + <sum of user embeddings, sum of movie embeddings>.
The same functions as `ClickPrompt.forward`, their sums in another order: equal within float32 rounding.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .model import ClickPrompt, DCNv2, DeepFM

__all__ = ["PairScorer"]

Sides = tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]


class PairScorer:
    """Click probabilities of pairs from per-user and per-movie field indices (`FeatureSpace.encode` columns)."""

    def __init__(self, model: ClickPrompt, user_fields: Sequence[int], movie_fields: Sequence[int],
                 batch_size: int = 4096):
        if not self.supports(model):
            raise ValueError("pair scoring needs a CTR-only DCNv2 or DeepFM model with an MLP")
        self.model, self.batch_size = model, batch_size
        user_fields, movie_fields = np.asarray(user_fields, np.int64), np.asarray(movie_fields, np.int64)
        self.user_offsets = model.embedding.offsets[torch.from_numpy(user_fields)]
        self.movie_offsets = model.embedding.offsets[torch.from_numpy(movie_fields)]
        dim = model.config.embed_dim
        # Columns of the flattened embeddings (field-major) that hold the user's fields, then the movie's.
        self.perm = torch.as_tensor((np.concatenate([user_fields, movie_fields])[:, None] * dim + np.arange(dim)).ravel())
        self.user_width = len(user_fields) * dim
        ctr = model.ctr
        first = ctr.deep[0]
        weight = first.weight.detach()[:, self.perm]
        self.deep_first = (weight[:, :self.user_width], weight[:, self.user_width:], first.bias.detach())
        if isinstance(ctr, DCNv2):
            self.cross = [(layer.weight.detach()[self.perm][:, self.perm], layer.bias.detach()[self.perm])
                          for layer in ctr.cross]
            width = self.perm.numel()
            out = ctr.out.weight.detach()
            self.out = (torch.cat([out[:, :width][:, self.perm], out[:, width:]], dim=1), ctr.out.bias.detach())

    @staticmethod
    def supports(model: ClickPrompt) -> bool:
        return (not model.fusion.uses_plm and isinstance(getattr(model, "ctr", None), (DCNv2, DeepFM))
                and len(model.ctr.deep) > 0)

    @torch.no_grad()
    def predict(self, user_cat: np.ndarray, movie_cat: np.ndarray, pair_user: np.ndarray,
                pair_movie: np.ndarray) -> np.ndarray:
        """float64 probabilities of the pairs (`pair_user[i]`, `pair_movie[i]`), rows of `user_cat` / `movie_cat`."""
        user_rows = torch.from_numpy(user_cat) + self.user_offsets
        movie_rows = torch.from_numpy(movie_cat) + self.movie_offsets
        embedding = self.model.embedding
        user, movie = self._sides(user_rows, embedding(user_rows), movie_rows, embedding(movie_rows))
        parts = []
        for begin in range(0, len(pair_user), self.batch_size):
            pu = torch.from_numpy(pair_user[begin:begin + self.batch_size])
            pm = torch.from_numpy(pair_movie[begin:begin + self.batch_size])
            u, m = [t[pu] for t in user], [t[pm] for t in movie]
            parts.append(torch.sigmoid(self._logits(u, m)))
        return torch.cat(parts).double().numpy() if parts else np.zeros(0, dtype=np.float64)

    def _sides(self, user_rows: torch.Tensor, user_emb: torch.Tensor, movie_rows: torch.Tensor,
               movie_emb: torch.Tensor) -> Sides:
        """Per user and per movie: the MLP's first layer, then DeepFM's (embedding sum, own terms) or DCNv2's
        (x0, first cross layer); only these are gathered per pair."""
        xu, xm = user_emb.flatten(1), movie_emb.flatten(1)
        w_user, w_movie, bias = self.deep_first
        user: tuple[torch.Tensor, ...] = (xu @ w_user.T,)
        movie: tuple[torch.Tensor, ...] = (xm @ w_movie.T + bias,)
        ctr = self.model.ctr
        if isinstance(ctr, DeepFM):
            su, sm = user_emb.sum(1), movie_emb.sum(1)
            # First-order weights and each side's own FM pairs; the bias goes with the movie.
            own_u = ctr.first_order(user_rows).sum(dim=(1, 2)) + 0.5 * (su * su - (user_emb * user_emb).sum(1)).sum(-1)
            own_m = (ctr.first_order(movie_rows).sum(dim=(1, 2)) + ctr.bias
                     + 0.5 * (sm * sm - (movie_emb * movie_emb).sum(1)).sum(-1))
            return user + (su, own_u), movie + (sm, own_m)
        user, movie = user + (xu,), movie + (xm,)
        if self.cross:
            weight, bias = self.cross[0]
            user += (xu @ weight[:, :self.user_width].T,)
            movie += (xm @ weight[:, self.user_width:].T + bias,)
        return user, movie

    def _logits(self, user: Sequence[torch.Tensor], movie: Sequence[torch.Tensor]) -> torch.Tensor:
        ctr = self.model.ctr
        deep = ctr.deep[1:](user[0] + movie[0])
        if isinstance(ctr, DeepFM):
            return user[2] + movie[2] + (user[1] * movie[1]).sum(-1) + ctr.deep_out(deep).squeeze(-1)
        x0 = torch.cat([user[1], movie[1]], dim=1)
        x = x0
        for i, (weight, bias) in enumerate(self.cross):
            x = x0 * (user[2] + movie[2] if i == 0 else x @ weight.T + bias) + x
        weight, bias = self.out
        return (torch.cat([x, deep], dim=-1) @ weight.T + bias).squeeze(-1)
