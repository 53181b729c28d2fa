"""KindProfiles (detector/baseline.py): a new kind takes the slot of the least recently used one."""
from __future__ import annotations

from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from detector.baseline import _KIND_SLOTS, _KIND_W, KindProfiles
from detector.features import N_FEATURES


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from((0.0, 5.0, 7.0, 1e9, 2e9)), min_size=_KIND_SLOTS, max_size=_KIND_SLOTS),
       st.floats(0.0, 3e9))
def test_a_new_kind_evicts_the_first_least_recently_used_kind(lasts, t):
    a = array("d")
    for j, last in enumerate(lasts):
        a.extend([float(100 + j), 9.0, last] + [0.5] * (_KIND_W - 3))
    k = KindProfiles(a.tobytes())
    want = min(range(0, len(a), _KIND_W), key=lambda i: (a[i + 2], i))  # the rule, as it was written
    k.learn(7, [1.0] * N_FEATURES, t)
    keys = list(k.a[0::_KIND_W])
    assert keys[want // _KIND_W] == 7.0 and k.a[want + 1] == 1.0
    assert [x for i, x in enumerate(keys) if i != want // _KIND_W] == \
        [float(100 + j) for j in range(_KIND_SLOTS) if j != want // _KIND_W]
