"""qos_hooks.core.records: the immutable value classes of the core behave like
frozen dataclasses, and mix with them."""

import json
import pickle
from dataclasses import FrozenInstanceError as DataclassFrozen
from dataclasses import dataclass
from typing import Optional, Tuple

import pytest

from qos_hooks.core.records import FrozenInstanceError, Record, asdict, default, replace
from qos_hooks.core.plan import Op, Plan, SetInterfaceBandwidth
from qos_hooks.core.policy import Bandwidth, Profile, Rate


class Point(Record):
    """A test record."""

    x: int
    y: int = 0
    tags: Tuple[str, ...] = ()
    inner: Optional[Rate] = None
    made: list = default(list)


class Point3(Point):
    """A subclass adds fields after the base's."""

    z: int = 7


def test_construction():
    assert Point(1) == Point(x=1, y=0)
    assert Point(1, 2).y == 2
    assert Point3(1, z=3)._values() == (1, 0, (), None, [], 3)
    with pytest.raises(TypeError, match="missing required argument 'x'"):
        Point()
    with pytest.raises(TypeError, match="unexpected keyword argument 'w'"):
        Point(1, w=2)
    with pytest.raises(TypeError, match="multiple values for argument 'x'"):
        Point(1, x=2)
    with pytest.raises(TypeError, match="takes 5 positional arguments but 6"):
        Point(1, 2, 3, 4, 5, 6)


def test_default_factory_is_per_instance():
    a, b = Point(1), Point(2)
    assert a.made == [] and a.made is not b.made


def test_frozen():
    p = Point(1)
    with pytest.raises(FrozenInstanceError):
        p.x = 2
    with pytest.raises(AttributeError):
        del p.y
    assert issubclass(FrozenInstanceError, AttributeError)


def test_eq_hash_repr():
    assert Point(1, 2) == Point(1, 2) and Point(1, 2) != Point(1, 3)
    assert Point(1) != Point3(1)                  # different classes never equal
    assert len({Rate(1, 2), Rate(1, 2), Rate(2)}) == 2
    assert hash(Bandwidth(inbound=Rate(1))) == hash(Bandwidth(inbound=Rate(1)))
    assert repr(Rate(average=5)) == "Rate(average=5, peak=None, burst=None, floor=None)"


def test_replace_and_asdict():
    p = Point(1, inner=Rate(average=3))
    q = replace(p, y=5)
    assert (q.x, q.y, q.inner) == (1, 5, Rate(average=3)) and p.y == 0
    assert asdict(q) == {"x": 1, "y": 5, "tags": (), "inner": {"average": 3, "peak": None,
                                                               "burst": None, "floor": None},
                         "made": []}
    # replace also takes dataclasses (Profile stays one: dataclasses.replace users)
    prof = replace(Profile(name="p"), on_existing="override")
    assert prof.on_existing == "override" and prof.bandwidth == Bandwidth()


def test_pickle_round_trip():
    bw = Bandwidth(inbound=Rate(average=1, peak=2), outbound=None)
    assert pickle.loads(pickle.dumps(bw)) == bw


def test_a_backend_may_subclass_op_with_a_dataclass():
    @dataclass(frozen=True)
    class Custom(Op):
        """A backend operation."""

        backend = "test"
        port: str
        rate: Optional[Rate] = None

        def describe(self):
            return "do %s" % self.port

    op = Custom(port="p1", rate=Rate(average=9))
    with pytest.raises(DataclassFrozen):
        op.port = "x"
    assert op == Custom("p1", Rate(average=9))
    d = op.to_dict()
    assert d["op"] == "Custom" and d["port"] == "p1" and d["rate"]["average"] == 9
    core = SetInterfaceBandwidth(domain="d", mac="m", target_dev=None,
                                 bandwidth=Bandwidth(inbound=Rate(average=1)))
    plan = Plan(ops=(core,)) + Plan(ops=(op,), warnings=("w",))
    data = json.loads(plan.to_json())
    assert [o["op"] for o in data["ops"]] == ["SetInterfaceBandwidth", "Custom"]
    assert data["ops"][0]["bandwidth"] == {"inbound": {"average": 1, "peak": None, "burst": None,
                                                       "floor": None}, "outbound": None}
    assert data["warnings"] == ["w"] and data["notes"] == []
