"""test_broker_limits.py -- a broker with a maximum packet size.

mosquitto drops the connection of a client that sends a PUBLISH larger than
its `max_packet_size` (and says the limit in its CONNACK). ingestion reads
the limit at every connection and never makes a larger message: readings of
several requests that would not fit together go in separate messages, a
request that alone would not fit is answered 413, naming the cause, and a
spooled message too large is sent in pieces. Before, such a
message was answered 202 (after going to the spool as lost with the
connection), then sent again at every reconnect, dropping the connection
each time: its readings were never stored."""

import concurrent.futures
import time
import uuid

import pytest

from sfhelp import Api, barrier, rfc3339, rows, wait_for

LIMIT = 20000
STACK_MOSQUITTO = f"max_packet_size {LIMIT}\n"


@pytest.fixture
def api(own_stack):
    return Api("127.0.0.1", own_stack.ports.http)


def readings(sensor, n, t0):
    return [{"sensor_id": sensor, "type": "temperature", "unit": "C", "value": 20 + i / 100,
             "ts": rfc3339(t0 + i * 1000)} for i in range(n)]


def broker_log(stack):
    return stack.log_path("mosquitto").read_text(errors="replace")


def test_ingestion_reads_the_limit(own_stack):
    for name in ("ingestion-1", "ingestion-2"):
        wait_for(lambda: f"max_packet_bytes={LIMIT}" in own_stack.log_tail(name, 200), 10,
                 f"{name} logging the broker's maximum packet size")


def test_a_request_too_large_for_one_packet_gets_413(own_stack, api):
    sensor = str(uuid.uuid4())
    t0 = int(time.time() * 1e6) - 3_600_000_000
    body = readings(sensor, 300, t0)   # about 41 KB, twice the limit once enriched
    r = api.post("/v1/readings", body)
    assert r.status == 413, r
    assert "maximum packet size" in r.json["error"], r
    assert r.json["index"] is None and r.json["field"] is None, r
    barrier(own_stack, api)
    assert rows(own_stack, f"sensor_id = '{sensor}'") == []
    assert "oversize packet" not in broker_log(own_stack)
    # The same readings in requests that fit are taken and stored.
    for i in range(0, 300, 50):
        r = api.post("/v1/readings", body[i:i + 50])
        assert r.status == 202, r
    wait_for(lambda: len(rows(own_stack, f"sensor_id = '{sensor}'")) == 300, 30,
             "the 300 readings stored")


def post_together(stack, api, t0, wait_stored=True):
    """40 requests of 40 readings at once: each fits (about 7 KB as a
    message), together they are 15 times the limit. Every one must be
    answered 202 (and stored). Returns the SQL condition for their rows."""
    sensors = [str(uuid.uuid4()) for _ in range(40)]
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda s: api.post("/v1/readings", readings(s, 40, t0)),
                                sensors))
    assert [a.status for a in answers] == [202] * 40, [a for a in answers if a.status != 202]
    scope = "sensor_id in (" + ",".join(f"'{s}'" for s in sensors) + ")"
    if wait_stored:
        wait_for(lambda: len(rows(stack, scope)) == 1600, 30, "the 1600 readings stored")
    return scope


def restart_broker(st, limit):
    """mosquitto again, with max_packet_size limit; returns once both
    replicas have reconnected and logged the limit."""
    since = st.mosquitto_log_size()
    assert st.stop_service("mosquitto") == 0
    st.mosquitto_extra = f"max_packet_size {limit}\n"
    st.start_service("mosquitto")
    if st.services["storage"].alive():
        st.wait_storage_subscribed(since, timeout=60)
    for name in ("ingestion-1", "ingestion-2"):
        wait_for(lambda: f"max_packet_bytes={limit}" in st.log_tail(name, 50), 30,
                 f"{name} reconnected and logging the new limit")
    return since


def test_requests_that_together_exceed_a_packet_are_all_stored(own_stack, api):
    post_together(own_stack, api, int(time.time() * 1e6) - 3_000_000_000)
    log = broker_log(own_stack)
    assert "oversize packet" not in log, log[-2000:]
    for name in ("ingestion-1", "ingestion-2"):
        assert "mqtt.connection_lost" not in own_stack.log_tail(name, 400), name


def edge_request(k, tag_chars, t0):
    """k readings without tags and one with 16 tags of tag_chars letters in
    all (16-4096): each letter one more byte in the message."""
    assert 16 <= tag_chars <= 16 * 256
    sensor = str(uuid.uuid4())
    body = readings(sensor, k + 1, t0)
    sizes = [tag_chars // 16 + (i < tag_chars % 16) for i in range(16)]
    body[-1]["tags"] = {f"t{i:02d}": "x" * n for i, n in enumerate(sizes)}
    return sensor, body


def test_a_request_at_the_limit_is_published_whole(own_stack, api):
    """The largest request a replica takes under the broker's limit, found to
    the byte, goes out in one PUBLISH the broker takes and is stored:
    ingestion counts every byte of its packet's header, the Correlation
    Data of the message's id included, against the limit."""
    t0 = int(time.time() * 1e6) - 500_000_000
    n = [0]

    def post(k, tag_chars):
        n[0] += 1
        sensor, body = edge_request(k, tag_chars, t0)
        # An X-Request-Id of one length (the message names it): HAProxy's
        # own grow with its counter.
        r = api.post("/v1/readings", body, headers={"X-Request-Id": f"edge-{n[0]:08d}"})
        assert r.status in (202, 413), r
        return sensor if r.status == 202 else None

    lo, hi = 0, 200   # readings: lo fits with the fewest tag letters, hi not
    assert post(lo, 16) and not post(hi, 16)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if post(mid, 16) else (lo, mid)
    k = lo
    lo, hi = 16, 16 * 256   # tag letters: each one byte, so the edge is exact
    assert not post(k, hi), "a reading more did not reach the limit"
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if post(k, mid) else (lo, mid)
    sensor = post(k, lo)
    assert sensor and not post(k, lo + 1)
    wait_for(lambda: len(rows(own_stack, f"sensor_id = '{sensor}'")) == k + 1, 30,
             "the readings of the request at the limit stored")
    assert "oversize packet" not in broker_log(own_stack)
    for name in ("ingestion-1", "ingestion-2"):
        assert "mqtt.connection_lost" not in own_stack.log_tail(name, 400), name


def test_a_spooled_message_over_the_limit_goes_in_pieces(own_stack):
    """ingestion-1 started while the broker is down does not know the limit
    yet: it spools a request of 300 readings as one message (about 57 KB)
    and answers 202. When the broker is back it learns the limit, and the
    spooled message goes in pieces that fit: all 300 are stored."""
    st = own_stack
    since = st.mosquitto_log_size()
    assert st.stop_service("mosquitto") == 0
    st.restart_service("ingestion-1")
    direct = Api("127.0.0.1", st.ports.ingestion[0])
    sensor = str(uuid.uuid4())
    t0 = int(time.time() * 1e6) - 2_000_000_000
    r = direct.post("/v1/readings", readings(sensor, 300, t0))
    assert r.status == 202, r
    st.start_service("mosquitto")
    st.wait_storage_subscribed(since, timeout=60)
    wait_for(lambda: len(rows(st, f"sensor_id = '{sensor}'")) == 300, 60,
             "the 300 spooled readings stored")
    assert "spool.split" in st.log_tail("ingestion-1", 200)
    assert "oversize packet" not in broker_log(st)


def test_a_broker_restarted_with_a_lower_limit(own_stack, api):
    """The broker comes back with a lower maximum packet size: ingestion
    learns it from the CONNACK of its new connection and keeps every
    message under it."""
    since = restart_broker(own_stack, 12000)
    post_together(own_stack, api, int(time.time() * 1e6) - 1_000_000_000)
    assert "oversize packet" not in broker_log(own_stack)[since:]


def test_unconfirmed_messages_over_a_lowered_limit_are_stored(own_stack, api):
    """Messages the broker acknowledged under a limit of 30000 but storage
    has not confirmed (it is stopped) are sent again after the broker comes
    back with 12000: those larger than that are cut into messages that fit.
    All readings are stored once storage is back."""
    st = own_stack
    restart_broker(st, 30000)
    assert st.stop_service("storage") == 0
    scope = post_together(st, api, int(time.time() * 1e6) - 500_000_000, wait_stored=False)
    since = restart_broker(st, 12000)
    # Republished at the reconnect, before storage can confirm anything.
    wait_for(lambda: any("retention.cut" in st.log_tail(n, 100)
                         for n in ("ingestion-1", "ingestion-2")), 15,
             "unconfirmed messages over the new limit cut to fit")
    st.start_service("storage")
    wait_for(lambda: len(rows(st, scope)) == 1600, 60, "the 1600 readings stored")
    assert "oversize packet" not in broker_log(st)[since:]


def test_a_spooled_reading_larger_than_the_limit_waits_for_a_higher_one(own_stack):
    """A reading with 1 KB of tags, spooled while the broker was away, and a
    broker back with a limit of 700 bytes: it cannot be sent at all, not
    even alone. The rest of the spool is sent, the big one stays in the
    spool (said once, not tried again and again), and goes as soon as the
    broker takes it."""
    st = own_stack
    since = st.mosquitto_log_size()
    assert st.stop_service("mosquitto") == 0
    st.restart_service("ingestion-1")   # knows no limit while the broker is away
    direct = Api("127.0.0.1", st.ports.ingestion[0])
    t0 = int(time.time() * 1e6) - 100_000_000
    big, small = readings(str(uuid.uuid4()), 1, t0), readings(str(uuid.uuid4()), 1, t0)
    big[0]["tags"] = {f"k{i}": "x" * 250 for i in range(4)}
    assert direct.post("/v1/readings", big).status == 202
    assert direct.post("/v1/readings", small).status == 202
    st.mosquitto_extra = "max_packet_size 700\n"
    st.start_service("mosquitto")
    st.wait_storage_subscribed(since, timeout=60)
    wait_for(lambda: rows(st, f"sensor_id = '{small[0]['sensor_id']}'"), 30,
             "the small reading stored")
    wait_for(lambda: "spool.unsendable" in st.log_tail("ingestion-1", 100), 10,
             "the big reading said to be unsendable")
    time.sleep(2)   # a retry loop would log it hundreds of times meanwhile
    assert st.log_tail("ingestion-1", 400).count("spool.unsendable") == 1
    assert rows(st, f"sensor_id = '{big[0]['sensor_id']}'") == []
    restart_broker(st, 20000)
    wait_for(lambda: rows(st, f"sensor_id = '{big[0]['sensor_id']}'"), 30,
             "the big reading stored once the broker takes it")
