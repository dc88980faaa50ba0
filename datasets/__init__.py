"""Dataset adapters and multi-task suites. Importing this package registers them."""
from . import demo  # noqa: F401
from . import (caltech101, dtd, eurosat, fgvc_aircraft, food101,  # noqa: F401
               imagenet, imagenet_a, imagenet_r, imagenet_sketch, imagenetv2,
               oxford_flowers, oxford_pets, stanford_cars, sun397, ucf101)
from . import fashion20, plant6, rs8, suites  # noqa: F401
