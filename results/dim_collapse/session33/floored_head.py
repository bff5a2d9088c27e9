"""Probe (session 33): `ppid train` with the DIM student's head given revision 1's one-channel
BatchNorm, its weight held at 0.5 or more (weight = 0.5 + softplus(raw)), so that the logits'
spread over the batch can never fall below 0.5. Teachers load unchanged (revision 2).
Usage: PYTHONPATH=src python results/dim_collapse/session33/floored_head.py TRAIN ARGS..."""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.parametrize as parametrize

import ppid.models.dim as dim
from ppid.cli import main

FLOOR = 0.5


class AtLeastFloor(nn.Module):
    def forward(self, raw):
        return FLOOR + F.softplus(raw)

    def right_inverse(self, weight):
        return torch.log(torch.expm1(weight - FLOOR))


built = dim.DIMNet.__init__


def floored_init(self, role, cross_layer=False, revision=dim.REVISION):
    if role == "teacher":
        return built(self, role, cross_layer, revision)
    built(self, role, cross_layer, revision=1)  # the head with BN(1)
    parametrize.register_parametrization(self.decoder[-1][1], "weight", AtLeastFloor())


dim.DIMNet.__init__ = floored_init
sys.exit(main(sys.argv[1:]))
