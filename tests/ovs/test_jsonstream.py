"""qos_hooks.ovs.jsonstream: the same values as ovs's own parser, however the
stream is cut, and the same interface for ovs.jsonrpc."""

import json

import ovs.json
from hypothesis import given, settings, strategies as st

from qos_hooks.ovs import jsonstream

# ovs's own pure-Python parser, whatever install() did to ovs.json.Parser
PyParser = jsonstream._original


def py_parser():
    p = object.__new__(PyParser)
    p.__init__()
    return p


def parse_stream(make, text, cuts):
    """Feed ``text`` in pieces cut at ``cuts`` the way ovs.jsonrpc does; the values."""
    values, parser, pending = [], None, ""
    pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    for piece in pieces:
        pending += piece
        while pending:
            if parser is None:
                parser = make()
            pending = pending[parser.feed(pending):]
            if parser.is_done():
                values.append(parser.finish())
                parser = None
            elif pending:
                raise AssertionError("parser consumed part of its input and is not done")
    return values, parser


text_st = st.text(alphabet=st.sampled_from('ab{}[]"\\/:,\n é\u2603'), max_size=8)
json_st = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | text_st,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(text_st, kids, max_size=4),
    max_leaves=20)
message_st = st.dictionaries(text_st, json_st, max_size=4) | st.lists(json_st, max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.lists(message_st, min_size=1, max_size=4), st.data())
def test_same_values_as_ovs_parser_however_the_stream_is_cut(messages, data):
    text = "".join(json.dumps(m, ensure_ascii=data.draw(st.booleans()),
                              separators=data.draw(st.sampled_from([(",", ":"), (", ", ": ")])))
                   for m in messages)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(text)), max_size=6))))
    fast, rest = parse_stream(jsonstream.Parser, text, cuts)
    slow, _ = parse_stream(py_parser, text, cuts)
    assert fast == slow == messages
    assert rest is None


def test_incomplete_input_and_errors_are_reported_as_strings():
    p = jsonstream.Parser()
    assert p.feed('{"a": "x\\"}') == len('{"a": "x\\"}') and not p.is_done()
    assert isinstance(p.finish(), str)
    p = jsonstream.Parser()
    p.feed('{"a" 1}')
    assert p.is_done() and p.finish().startswith("syntax error")
    assert jsonstream.Parser().finish() == "empty input stream"


def test_scalars_and_check_trailer_go_to_ovs_parser():
    # ovs's parser refuses a top-level scalar (RFC 4627): the same error string
    p, q = jsonstream.Parser(), py_parser()
    p.feed("  17 ")
    q.feed("  17 ")
    assert isinstance(p.finish(), str) and p.finish() == q.finish()
    assert not isinstance(jsonstream.Parser(check_trailer=True), jsonstream.Parser)


def test_install_only_without_the_c_parser():
    import ovs as ovs_pkg
    from qos_hooks.ovs import ovsdb
    ovsdb._ovs()
    if ovs.json.PARSER == ovs.json.PARSER_C:
        assert ovs.json.Parser is not jsonstream.Parser
    else:
        assert ovs.json.Parser is jsonstream.Parser
        assert jsonstream.install(ovs_pkg) is False     # once
        # ovs.json.from_string (check_trailer) still uses ovs's own parser
        assert ovs.json.from_string('{"a": [1, "b"]}') == {"a": [1, "b"]}
        assert isinstance(ovs.json.from_string('{"a": 1} x'), str)
