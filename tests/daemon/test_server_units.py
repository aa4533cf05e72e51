"""Unit tests of the endpoint's pieces: allow-list, rate limit, datagrams, subscribers, event bus."""

import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from sideman.daemon.events import EventBus, EventRecorder
from sideman.daemon.server import OscServer, RateLimiter, build_datagram, parse_networks
from sideman.daemon.subscribers import MAX_SUBSCRIBERS, SubscriberError, Subscribers


def datagram(address, *args):
    builder = OscMessageBuilder(address)
    for value in args:
        builder.add_arg(value)
    return builder.build().dgram


def make_server(allow=(), state="UNINITIALIZED"):
    calls = []

    def ping(sender, token=None):
        calls.append(("ping", sender, token))
        return [("/midigpt/pong", (token,))]

    handlers = {"ping": ping}
    subscribers = Subscribers(lambda host: True)
    server = OscServer(handlers, subscribers, lambda: state, allow=parse_networks(allow))
    return server, calls


def sent(server):
    return [(OscMessage(d).address, tuple(OscMessage(d).params), target) for d, target in server._outbox]


def test_a_source_outside_the_allow_list_changes_nothing_and_gets_nothing():
    server, calls = make_server()
    server.datagram_received(datagram("/midigpt/ping", 1), ("10.0.0.5", 9000))
    assert calls == [] and sent(server) == []
    assert server.counters.rejected_sources == 1


def test_an_allowed_range_is_served():
    server, calls = make_server(allow=["10.0.0.0/8"])
    server.datagram_received(datagram("/midigpt/ping", 1), ("10.0.0.5", 9000))
    assert calls == [("ping", ("10.0.0.5", 9000), 1)]
    assert sent(server) == [("/midigpt/pong", (1,), ("10.0.0.5", 9000))]


def test_loopback_is_always_allowed():
    server, calls = make_server()
    server.datagram_received(datagram("/midigpt/ping", 3), ("127.0.0.1", 9000))
    assert len(calls) == 1


def test_a_handler_that_raises_is_reported_as_an_error_not_a_crash():
    server, _ = make_server()
    server.handlers["ping"] = lambda sender, token=None: 1 / 0
    server.datagram_received(datagram("/midigpt/ping", 3), ("127.0.0.1", 9000))
    (address, args, _), = sent(server)
    assert address == "/midigpt/error" and args[0] == 5 and "ZeroDivisionError" in args[1]


def test_wrong_argument_types_are_error_4_before_the_handler_runs():
    server, calls = make_server(state="RUNNING")
    server.handlers["note"] = lambda *a: calls.append(a)
    server.datagram_received(datagram("/midigpt/note", 0, "sixty", 80, 0.0, 0.5, 0), ("127.0.0.1", 9000))
    (address, args, _), = sent(server)
    assert calls == [] and address == "/midigpt/error" and args[0] == 4 and "pitch" in args[1]


def test_state_is_checked_before_the_handler_runs():
    server, calls = make_server(state="INITIALIZING")
    server.handlers["note"] = lambda *a: calls.append(a)
    server.datagram_received(datagram("/midigpt/note", 0, 60, 80, 0.0, 0.5, 0), ("127.0.0.1", 9000))
    (address, args, _), = sent(server)
    assert calls == [] and args == (1, "Message not allowed in state 'INITIALIZING'")


def test_rate_limiter_allows_a_burst_then_refills():
    limiter = RateLimiter(rate=10.0, burst=5.0)
    assert [limiter.allow("h", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert limiter.allow("h", 0.1) is True  # 0.1 s x 10/s = one token back
    assert limiter.allow("other", 0.1) is True  # buckets are per source


def test_rate_limited_packets_are_counted():
    server, calls = make_server()
    server.rate_limiter = RateLimiter(rate=0.0, burst=2.0)
    for _ in range(4):
        server.datagram_received(datagram("/midigpt/ping", 1), ("127.0.0.1", 9000))
    assert len(calls) == 2 and server.counters.rate_limited == 2


def test_bad_allow_values_name_the_value():
    with pytest.raises(ValueError, match="not-an-ip"):
        parse_networks(["not-an-ip"])


def test_datagrams_use_the_protocol_type_tags():
    message = OscMessage(build_datagram("/midigpt/generated/note", (1, 4, 64, 90, 0, 1)))
    assert message.params == [1, 4, 64, 90, 0.0, 1.0]
    assert isinstance(message.params[4], float)
    with pytest.raises(ValueError, match="does not match"):
        build_datagram("/midigpt/generated/note", (1, 4))


def test_subscribers_init_target_is_replaced_explicit_ones_stay():
    subscribers = Subscribers(lambda host: host.startswith("127."))
    subscribers.set_init_target(("127.0.0.1", 5000))
    subscribers.subscribe("localhost", 6000)
    subscribers.set_init_target(("127.0.0.1", 5001))
    assert subscribers.targets() == [("127.0.0.1", 5001), ("127.0.0.1", 6000)]
    assert subscribers.unsubscribe("127.0.0.1", 6000) is True
    assert subscribers.targets() == [("127.0.0.1", 5001)]


def test_subscribers_refuse_hosts_outside_the_allow_list_and_names():
    subscribers = Subscribers(lambda host: host.startswith("127."))
    with pytest.raises(SubscriberError, match="not loopback"):
        subscribers.subscribe("8.8.8.8", 53)
    with pytest.raises(SubscriberError, match="IP address"):
        subscribers.subscribe("example.com", 53)


def test_subscribers_are_bounded():
    subscribers = Subscribers(lambda host: True)
    for port in range(MAX_SUBSCRIBERS):
        subscribers.subscribe("127.0.0.1", 7000 + port)
    with pytest.raises(SubscriberError, match="at most"):
        subscribers.subscribe("127.0.0.1", 9999)


def test_event_bus_delivers_to_every_subscriber_even_when_one_fails():
    bus = EventBus()
    recorder = EventRecorder()

    def broken(event):
        raise RuntimeError("boom")

    bus.subscribe(broken)
    unsubscribe = bus.subscribe(recorder)
    bus.publish("bar", bar_index=3)
    assert [e.data["bar_index"] for e in recorder.of_kind("bar")] == [3]
    unsubscribe()
    bus.publish("bar", bar_index=4)
    assert len(recorder.of_kind("bar")) == 1


def test_event_bus_refuses_unknown_kinds():
    with pytest.raises(ValueError, match="unknown event kind"):
        EventBus().publish("nonsense")


def test_event_recorder_waits_for_a_matching_event():
    recorder = EventRecorder()
    bus = EventBus()
    bus.subscribe(recorder)
    bus.publish("job", status="done", target_bar=5)
    assert recorder.wait_for(lambda e: e.kind == "job" and e.data["target_bar"] == 5, timeout=1).data["status"] == "done"
    assert recorder.wait_for(lambda e: e.kind == "job" and e.data["target_bar"] == 6, timeout=0.05) is None
