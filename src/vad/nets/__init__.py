"""Plain nn.Modules shared by the methods; every constructor takes explicit arguments (no config objects).

    from vad.nets import UNet, PatchDiscriminator
    generator, discriminator = UNet(12, 3), PatchDiscriminator(3)

- ``UNet``: the FFP generator (official TF variant by default, the PyTorch-port variant by arguments).
- ``PatchDiscriminator``: the FFP / pix2pix PatchGAN discriminator, no normalisation.
- ``init_weights``: the Xavier / N(0, 0.02) initialisers the nets use.
- ``Memory``: MNAD's memory of prototype items (read by softmax attention, updated without gradient); ``MemoryRead``
  is what one read returns.
- ``MNADEncoder``, ``MNADDecoder``: MNAD's encoder and its decoder (with U-Net skips for prediction, without for
  reconstruction).
- ``ConvLSTM``, ``ConvLSTMCell``: a convolutional LSTM stack and cell with explicit (h, c) state.
"""

from vad.nets.convlstm import ConvLSTM, ConvLSTMCell
from vad.nets.memory import Memory, MemoryRead
from vad.nets.mnad import MNADDecoder, MNADEncoder
from vad.nets.patch_discriminator import PatchDiscriminator
from vad.nets.unet import DoubleConv, UNet, init_weights

__all__ = [
    "ConvLSTM",
    "ConvLSTMCell",
    "DoubleConv",
    "MNADDecoder",
    "MNADEncoder",
    "Memory",
    "MemoryRead",
    "PatchDiscriminator",
    "UNet",
    "init_weights",
]
