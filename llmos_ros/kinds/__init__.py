"""
Modality kinds: one module per kind behind one interface (`base.Kind`), registered by name.

`get(name)`, `of(mod)`, `for_message_type(t)`, `names()`; messages <-> frame records of any
kind: `frame_from_msg(msg_type, msg)`, `frame_message(frame, flavour)`. A new sensor kind is a
module with its records and a `Kind` subclass, and one `register` line below.
"""
from llmos_ros.kinds.audio import AudioKind
from llmos_ros.kinds.base import (
    Kind,
    for_message_type,
    frame_from_msg,
    frame_message,
    get,
    message_types_by_kind,
    names,
    of,
    register,
)
from llmos_ros.kinds.image import ImageKind
from llmos_ros.kinds.taxels import TaxelKind
from llmos_ros.kinds.wrench import WrenchKind

register(ImageKind())
register(AudioKind())
register(TaxelKind())
register(WrenchKind())

__all__ = ['Kind', 'for_message_type', 'frame_from_msg', 'frame_message', 'get',
           'message_types_by_kind', 'names', 'of', 'register']
