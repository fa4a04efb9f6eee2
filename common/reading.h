/* reading.h -- the reading model: parse and validate what sensors send,
 * convert to canonical units, and carry readings over MQTT.
 *
 * Two wire forms:
 *  - HTTP (untrusted, from sensors): reading_parse_body() for POST /v1/readings,
 *    reading_parse_legacy() for the old sensor container's POST / payload.
 *  - MQTT (between our services, still validated): a batch message built
 *    with reading_msg_*() by ingestion and read back by reading_decode_message()
 *    in storage. Layout (one JSON object, UTF-8):
 *
 *      {"v":1,"by":"<ingestion instance>","readings":[
 *        {"sensor_id":"s-1","type":"temperature","ts_us":1795341600123000,
 *         "value":22,"unit":"C","raw_value":71.6,"raw_unit":"F",
 *         "received_at_us":1795341600200000,"tags":{"room":"a"}}, ...],
 *       "rids":["<request id>", ...]}
 *
 *    rids (optional) names the HTTP requests whose readings the message
 *    holds, for the logs: `grep <request id>` follows a reading to storage.
 *
 *    ts_us and received_at_us are integers (microseconds since the epoch,
 *    UTC) so that a retried reading maps to the very same primary key.
 *
 * Nothing here logs, exits or keeps global state. */
#ifndef SF_READING_H
#define SF_READING_H

#include <stddef.h>
#include <stdint.h>

#define READING_SENSOR_ID_MAX 64
#define READING_TAGS_MAX 16
#define READING_TAG_LEN_MAX 256      /* bytes, per tag key and per value */
#define READING_INSTANCE_MAX 64

enum reading_type { READING_TEMPERATURE = 0, READING_HUMIDITY, READING_PRESSURE };

struct reading {
    char sensor_id[READING_SENSOR_ID_MAX + 1];
    enum reading_type type;
    double value;            /* in the canonical unit of the type */
    double raw_value;        /* as sent */
    const char *raw_unit;    /* as sent, or the canonical unit when omitted;
                              * always one of the static unit names */
    int64_t ts_us;           /* time of measurement, truncated to µs */
    int64_t received_at_us;  /* ingestion's clock when the request arrived */
    char *tags_json;         /* compact JSON object of string->string,
                              * NULL when none; owned by the reading */
};

/* A growable array of readings. Zero-initialise; free with reading_batch_free. */
struct reading_batch {
    struct reading *v;
    size_t n, cap;
};

/* What was wrong, for a 400 answer or a dead letter. index is the reading's
 * position in the request's array (0 for a single object), or -1 when the
 * problem is the body as a whole; field is "" when not about one field.
 * Both are valid UTF-8, so they can go into a JSON answer as they are. */
struct reading_error {
    long index;
    char field[32];
    char message[200];
    int out_of_memory;   /* the input may be fine: try again later */
};

struct reading_limits {
    size_t max_readings;     /* per request; e.g. 1000 */
    int64_t max_future_us;   /* ts later than now + this is rejected */
};

const char *reading_type_name(enum reading_type t);     /* "temperature" ... */
const char *reading_canonical_unit(enum reading_type t); /* "C", "%", "hPa" */

/* Writes v (finite) as text that reads back (strtod, PostgreSQL's float8,
 * JSON) as exactly v (-0 as 0), NUL-terminated; returns its length. A whole number of
 * millionths, what sensors send, is written as its shortest decimal ("21.53",
 * not "21.530000000000001") with integer arithmetic; anything else with
 * %.17g. buf holds READING_NUMBER_MAX bytes. */
#define READING_NUMBER_MAX 32
size_t reading_format_number(double v, char buf[READING_NUMBER_MAX]);

/* True when s (len bytes) is 1..READING_SENSOR_ID_MAX characters of
 * [A-Za-z0-9._:-]: the alphabet of sensor ids and instance ids. */
int reading_sensor_id_valid(const char *s, size_t len);

/* Looks up a type by name. Returns 0, or -1 if unknown. */
int reading_type_parse(const char *name, enum reading_type *out);

/* Converts raw (in unit, which must belong to type) to the canonical unit.
 * On success returns 0, stores the value and the static unit name in
 * *unit_static. Returns -1 for a unit the type does not have, or when the
 * result is not physically possible (below absolute zero, humidity outside
 * 0..100, negative pressure). */
int reading_convert(enum reading_type type, const char *unit, double raw,
                    double *canonical, const char **unit_static);

/* Parses a POST /v1/readings body: one reading object or an array of
 * 1..max_readings of them, no two with the same (sensor_id, type, ts_us)
 * (the later one is refused, field "ts"). All or nothing: on success returns
 * 0 and appends every reading to out (received_at_us = now_us, ts_us =
 * now_us when absent); on the first problem returns -1, fills err and leaves
 * out as it was. */
int reading_parse_body(const char *body, size_t len,
                       const struct reading_limits *lim, int64_t now_us,
                       struct reading_batch *out, struct reading_error *err);
/* The same through jansson alone. reading_parse_body reads a body of plain
 * readings (members it knows, strings of printable ASCII without escapes)
 * without jansson, whose lexer was most of ingestion's parsing, and hands
 * everything else, and every error, to this one, which defines what is
 * accepted and says what is wrong: the fuzz target and the unit tests check
 * that the two agree on every input. */
int reading_parse_body_jansson(const char *body, size_t len,
                               const struct reading_limits *lim, int64_t now_us,
                               struct reading_batch *out, struct reading_error *err);

/* Parses the legacy sensor payload
 *   {"type":"Sensor","id":"<uuid>","content":{"temperature_f":71.6,
 *    "time_of_measurement":"2019-08-30T12:00:00.123456"}}
 * also when the whole object arrives JSON-encoded a second time as a JSON
 * string. A temperature in F; the naive timestamp is UTC. Same contract as
 * reading_parse_body. */
int reading_parse_legacy(const char *body, size_t len,
                         const struct reading_limits *lim, int64_t now_us,
                         struct reading_batch *out, struct reading_error *err);

/* Frees what the batch owns and empties it (keeps it usable). */
void reading_batch_clear(struct reading_batch *b);
void reading_batch_free(struct reading_batch *b);

/* --- MQTT batch message --------------------------------------------------
 * A message under construction: reading_msg_init(), then reading_msg_add()
 * for each reading, then reading_msg_finish() to get the bytes. */
struct reading_msg {
    char *buf;
    size_t len, cap;
    size_t count;            /* readings added */
    char *rids;              /* "id","id2"... written by reading_msg_finish */
    size_t rids_len, rids_cap, nrids;
};

/* At most this many request ids per message; later ones are not recorded. */
#define READING_MSG_RIDS_MAX 4096

/* Starts a message from the given ingestion instance. Returns 0, -1 on OOM. */
int reading_msg_init(struct reading_msg *m, const char *instance);
/* Makes room for a message of len bytes in all at once (say, as long as
 * the one before), so that it does not grow a step at a time. Returns 0,
 * -1 on OOM (the message is unchanged). */
int reading_msg_reserve(struct reading_msg *m, size_t len);
/* Appends one reading. Returns 0, -1 on OOM. */
int reading_msg_add(struct reading_msg *m, const struct reading *r);
/* Records the id of a request whose readings were added (skipped when it
 * repeats the last one, or past READING_MSG_RIDS_MAX). rid must pass
 * reading_request_id_valid. Returns 0, -1 on an invalid id or OOM (the
 * message is unchanged then: an id is worth a log line, not a reading). */
int reading_msg_add_rid(struct reading_msg *m, const char *rid);
/* Closes the JSON; m->buf/m->len are then the payload. Returns 0, -1 on OOM. */
int reading_msg_finish(struct reading_msg *m);
/* The payload's size once finished (before reading_msg_finish()). */
size_t reading_msg_size(const struct reading_msg *m);
/* Where an unfinished message stands, to take back what was added since
 * (readings and request ids) with reading_msg_rollback(). */
struct reading_msg_mark {
    size_t len, count, rids_len, nrids;
};
struct reading_msg_mark reading_msg_mark(const struct reading_msg *m);
void reading_msg_rollback(struct reading_msg *m, struct reading_msg_mark mark);
void reading_msg_free(struct reading_msg *m);

/* Confirmations. storage confirms each message it has committed to the
 * ingestion instance that sent it, on <stored prefix>/<by>; ingestion keeps
 * what it published until then (end to end: it covers a broker that lost
 * messages it had acknowledged). ingestion gives each message an id,
 * READING_MSG_ID_LEN bytes big-endian in the PUBLISH's Correlation Data
 * (MQTT v5's field for matching a response to its request), and storage
 * answers "id:" and its 16 lowercase hex digits. A message without one
 * (from an ingestion older than ids) is confirmed by its digest instead:
 * 16 lowercase hex digits of reading_msg_digest(), which reads every byte
 * of the message (0.36 ms for 256 KiB: a fifth of ingestion's and a
 * quarter of storage's CPU in batch, when both sides hashed every
 * message). */
#define READING_MSG_ID_LEN 8
#define READING_CONFIRM_MAX 20   /* the longest confirmation, NUL included */
enum reading_confirm_kind {
    READING_CONFIRM_NONE = 0,    /* not a confirmation */
    READING_CONFIRM_ID,          /* value: the message's id */
    READING_CONFIRM_DIGEST       /* value: reading_msg_digest() of its bytes */
};

/* Writes id as a message's Correlation Data (big-endian). */
void reading_msg_id_bytes(uint64_t id, unsigned char out[READING_MSG_ID_LEN]);

/* A 64-bit digest (FNV-1a) of a message's bytes. */
uint64_t reading_msg_digest(const void *payload, size_t len);

/* Writes into out (READING_CONFIRM_MAX bytes) the confirmation of a message
 * whose Correlation Data is corr (corrlen bytes; NULL or 0: none) and whose
 * payload is payload: by its id when corr is an id, else by its digest.
 * Returns the confirmation's length. */
size_t reading_confirm_format(char *out, const void *corr, size_t corrlen,
                              const void *payload, size_t len);

/* Reads a confirmation: returns its kind and puts its id or digest in
 * *value; READING_CONFIRM_NONE for anything else. */
enum reading_confirm_kind reading_confirm_parse(const void *buf, size_t len, uint64_t *value);

/* Parses and validates an MQTT batch message (as reading_msg_* write it).
 * On success returns 0, copies the "by" instance into by (NUL-terminated,
 * at most bylen-1 bytes), the request ids, comma-separated, into rids (""
 * when none; cut with a final "..." when longer than ridslen-1; rids may be
 * NULL) and appends the readings to out. On any problem returns -1 with err
 * filled and out unchanged: the message is a dead letter. */
int reading_decode_message(const void *payload, size_t len,
                           char *by, size_t bylen, char *rids, size_t ridslen,
                           struct reading_batch *out, struct reading_error *err);
/* The same through jansson alone. reading_decode_message reads a message
 * laid out as reading_msg_* write it (whitespace allowed inside tags)
 * without jansson (whose lexer was most of storage's CPU) and hands
 * everything else to this one, which defines what is accepted and says
 * what is wrong: the fuzz target and the unit tests check that the two
 * agree on every input. */
int reading_decode_message_jansson(const void *payload, size_t len,
                                   char *by, size_t bylen, char *rids, size_t ridslen,
                                   struct reading_batch *out, struct reading_error *err);

/* True when s (len bytes) may be a request id: 1..64 characters of
 * [A-Za-z0-9._:-] (what X-Request-Id accepts; safe in logs and JSON). */
int reading_request_id_valid(const char *s, size_t len);

#endif
