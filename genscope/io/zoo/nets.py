"""The zoo's network classes (the builders in :mod:`genscope.io.zoo.archs` call them).

Parameter names follow the reference implementations (torchvision ResNet-18/34; kuangliu
pytorch-cifar VGG and PreAct ResNet-18; xternalz WideResNet) so their state dicts load as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from genscope.io.zoo.archs.lenet import PADDINGS as LENET_PADDINGS
from genscope.io.zoo.archs.lenet import final_size as lenet_final_size

#: Hidden activations of the MLP and LeNet, by config name
#: (:data:`genscope.io.zoo.archs.mlp.ACTIVATION_NAMES`).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}

# Models
# --------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Fully-connected network: ``flatten`` then ``layers`` (an ``nn.Sequential``).

    Per hidden width: ``Linear``, optional ``BatchNorm1d``, the activation, optional ``Dropout``;
    then a final ``Linear`` to the classes. Parameter names are ``layers.<i>.weight`` /
    ``layers.<i>.bias`` with ``i`` the position in that sequence (the activation always takes a
    slot, ``Identity`` included; BatchNorm and Dropout take one only when enabled).

    MLPs are the classic subjects of generalization studies: Zhang et al., "Understanding deep
    learning requires rethinking generalization", ICLR 2017; Neyshabur et al., "The role of
    over-parametrization in generalization of neural networks", ICLR 2019.
    """

    def __init__(
        self,
        input_dim: int,
        widths: Sequence[int],
        num_classes: int,
        activation: str = "relu",
        bias: bool = True,
        batchnorm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        layers: list[nn.Module] = []
        fan_in = input_dim
        for w in widths:
            layers.append(nn.Linear(fan_in, w, bias=bias))
            if batchnorm:
                layers.append(nn.BatchNorm1d(w))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            fan_in = w
        layers.append(nn.Linear(fan_in, num_classes, bias=bias))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.flatten(x))


class LeNet5(nn.Module):
    """LeNet-5 (LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document
    recognition", Proc. IEEE 1998), in its common modern form: ReLU (or tanh) and max-pooling.

    ``conv1`` (5x5, 6 channels) - pool - ``conv2`` (5x5, 16) - pool - ``fc1`` (120) - ``fc2``
    (84) - ``fc3`` (classes). Paddings of (conv1, conv2): ``"same"`` = (2, 2), which keeps the
    spatial size through each conv so that inputs down to 4x4 work (8x8 digits: fc1 sees 16x2x2);
    ``"classic"`` = (2, 0), LeNet-5 on 28x28 MNIST (fc1 sees 16x5x5); ``"valid"`` = (0, 0),
    LeNet-5 on 32x32 inputs as in the paper and kuangliu/pytorch-cifar (16x5x5).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        input_size: int,
        activation: str = "relu",
        padding: str = "same",
    ) -> None:
        super().__init__()
        p1, p2 = LENET_PADDINGS[padding]
        final = lenet_final_size(input_size, padding)
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=p1)
        self.act1 = ACTIVATIONS[activation]()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=p2)
        self.act2 = ACTIVATIONS[activation]()
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * final * final, 120)
        self.act3 = ACTIVATIONS[activation]()
        self.fc2 = nn.Linear(120, 84)
        self.act4 = ACTIVATIONS[activation]()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        x = self.flatten(x)
        x = self.act3(self.fc1(x))
        x = self.act4(self.fc2(x))
        return self.fc3(x)


class VGG(nn.Module):
    """VGG for CIFAR (Simonyan & Zisserman, "Very deep convolutional networks for large-scale
    image recognition", ICLR 2015), as in kuangliu/pytorch-cifar: ``features`` (3x3 convs with
    bias, optional BatchNorm, ReLU, 2x2 max-pools) then one ``classifier`` Linear.

    Deviations, neither of which changes a parameter: the max-pools use ``ceil_mode=True`` so that
    inputs smaller than 32x32 (8x8 digits) never pool to zero (identical for sizes that are powers
    of two), and global adaptive average pooling replaces the 1x1 average pool, so any input size
    works (identical for 32x32 inputs, where the features are already 1x1).
    """

    def __init__(
        self,
        channels: Sequence[int | str],
        in_channels: int,
        num_classes: int,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in channels:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                continue
            c = int(v)
            layers.append(nn.Conv2d(cin, c, 3, padding=1))
            if batchnorm:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.ReLU())
            cin = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


class BasicBlock(nn.Module):
    """ResNet basic block with torchvision's names (``conv1``, ``bn1``, ``conv2``, ``bn2``,
    ``downsample.0`` = 1x1 conv, ``downsample.1`` = BN); He et al. 2016."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet (He, Zhang, Ren & Sun, "Deep residual learning for image recognition", CVPR 2016).

    One class, torchvision's module names throughout (``conv1``, ``bn1``, ``relu``, ``maxpool``,
    ``layer1``..``layer4``, ``avgpool``, ``fc``; blocks as :class:`BasicBlock`):

    * depth 18/34: torchvision's ``resnet18``/``resnet34`` (stages of 64/128/256/512 x width/64
      channels). With ``cifar_stem=False`` the modules, names, shapes and initialisation are
      exactly torchvision's (7x7 stride-2 conv + 3x3 stride-2 max-pool), so a torchvision state
      dict loads as it is; with ``cifar_stem=True`` (the CIFAR convention, e.g.
      kuangliu/pytorch-cifar) ``conv1`` is 3x3 stride 1 and ``maxpool`` is an ``Identity``.
    * depth 6n+2 (20, 32, 44, 56, 110; also 8, 14): the CIFAR ResNet of the paper's section 4.2,
      three stages of n blocks with width/2*width/4*width channels (16/32/64 by default).
      Shortcuts that change shape use projection (the paper's option B: 1x1 conv + BN, in
      ``downsample``) rather than option A's zero padding, so every block is a plain module and
      the names match the 18/34 family; ``layer4`` is an ``Identity``.
    """

    def __init__(
        self,
        stages: Sequence[tuple[int, int, int]],
        in_channels: int,
        num_classes: int,
        width: int,
        imagenet_stem: bool,
    ) -> None:
        super().__init__()
        if imagenet_stem:
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool: nn.Module = (
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if imagenet_stem else nn.Identity()
        )
        layers: list[nn.Module] = []
        cin = width
        for planes, n, stride in stages:
            blocks = [BasicBlock(cin, planes, stride)]
            blocks += [BasicBlock(planes, planes) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
            cin = planes
        while len(layers) < 4:
            layers.append(nn.Identity())
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)
        # torchvision's initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016b), kuangliu/pytorch-cifar names: ``bn1``,
    ``conv1``, ``bn2``, ``conv2``, ``shortcut.0`` (1x1 conv, taken after ``bn1``-ReLU)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        shortcut = x
        if self.shortcut is not None:
            shortcut = self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu2(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """Pre-activation ResNet-18 (He, Zhang, Ren & Sun, "Identity mappings in deep residual
    networks", ECCV 2016), the CIFAR implementation of kuangliu/pytorch-cifar: ``conv1`` (3x3,
    stride 1), ``layer1``..``layer4`` of :class:`PreActBlock`, global average pooling,
    ``linear``. With ``final_bn`` a BN + ReLU (module ``bn``) precedes the pooling, as in the
    paper and in Rice, Wong & Kolter 2020. Adaptive pooling replaces kuangliu's ``avg_pool2d(4)``
    (identical for 32x32 inputs)."""

    def __init__(
        self, in_channels: int, num_classes: int, width: int = 64, final_bn: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        layers: list[nn.Sequential] = []
        cin = width
        for i in range(4):
            planes = width * 2**i
            stride = 1 if i == 0 else 2
            blocks = [PreActBlock(cin, planes, stride), PreActBlock(planes, planes)]
            layers.append(nn.Sequential(*blocks))
            cin = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn: nn.Module = nn.BatchNorm2d(cin) if final_bn else nn.Identity()
        self.relu: nn.Module = nn.ReLU() if final_bn else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        out = self.relu(self.bn(out))
        return self.linear(self.flatten(self.avgpool(out)))


class WideBasic(nn.Module):
    """Wide ResNet block, pre-activation, xternalz/WideResNet-pytorch names: ``bn1``, ``relu1``,
    ``conv1``, ``bn2``, ``relu2``, ``conv2``, ``convShortcut`` (1x1, on the activated input when
    the shape changes); dropout between the two convs (Zagoruyko & Komodakis 2016)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.convShortcut: nn.Module | None = None
        if in_planes != out_planes or stride != 1:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.relu1(self.bn1(x))
        shortcut = x
        if self.convShortcut is not None:
            shortcut = self.convShortcut(o)
        out = self.relu2(self.bn2(self.conv1(o)))
        out = self.conv2(self.dropout(out))
        return shortcut + out


class _WideStage(nn.Module):
    """xternalz's ``NetworkBlock``: the blocks of one stage in ``layer``."""

    def __init__(
        self, n: int, in_planes: int, out_planes: int, stride: int, dropout: float
    ) -> None:
        super().__init__()
        blocks = [WideBasic(in_planes, out_planes, stride, dropout)]
        blocks += [WideBasic(out_planes, out_planes, 1, dropout) for _ in range(n - 1)]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """Wide ResNet WRN-depth-k (Zagoruyko & Komodakis, "Wide residual networks", BMVC 2016).

    (depth - 4) / 6 pre-activation blocks in each of three stages of 16k/32k/64k channels, with
    the names of xternalz/WideResNet-pytorch (also used by RobustBench): ``conv1``,
    ``block1.layer.0.bn1``, ..., ``bn1``, ``relu``, ``fc``; its initialisation (Kaiming normal,
    fan_out; BN 1/0; fc bias 0). Global adaptive average pooling (identical to its
    ``avg_pool2d(8)`` on 32x32 inputs).
    """

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        in_channels: int,
        num_classes: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        n = (depth - 4) // 6
        ch = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = _WideStage(n, ch[0], ch[1], 1, dropout)
        self.block2 = _WideStage(n, ch[1], ch[2], 2, dropout)
        self.block3 = _WideStage(n, ch[2], ch[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(ch[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        return self.fc(self.flatten(self.avgpool(out)))


class NiN(nn.Module):
    """Network-in-Network (Lin, Chen & Yan, "Network in network", ICLR 2014) in the form of the
    PGDL competition task models (Jiang et al., "NeurIPS 2020 competition: predicting
    generalization in deep learning", 2020; also Jiang et al., "Fantastic generalization
    measures and where to find them", ICLR 2020).

    ``features.<b>`` is block ``b``: a ``kernel_size`` conv with ``stride`` (default 3x3,
    stride 2, "same" padding), then two 1x1 convs, each conv followed by BN (when ``batchnorm``)
    and ReLU, then dropout when ``dropout`` > 0. ``classifier`` is a 1x1 conv to the classes,
    followed by global average pooling. The default width 192 is Lin et al.'s CIFAR width. Convs
    carry biases (the Keras default of the PGDL models).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 3,
        width: int = 192,
        kernel_size: int = 3,
        stride: int = 2,
        batchnorm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        cin = in_channels
        for _ in range(depth):
            layers: list[nn.Module] = []
            for j in range(3):
                if j == 0:
                    layers.append(
                        nn.Conv2d(cin, width, kernel_size, stride=stride, padding=kernel_size // 2)
                    )
                else:
                    layers.append(nn.Conv2d(width, width, 1))
                if batchnorm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            blocks.append(nn.Sequential(*layers))
            cin = width
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Conv2d(width, num_classes, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(self.classifier(self.features(x))))
