/* net.h -- socket settings our libraries do not make themselves.
 *
 * paho.mqtt.c 1.3.11 never sets TCP_NODELAY on its socket (no setsockopt in
 * libpaho-mqtt3a at all), so Nagle's algorithm holds a small packet (a
 * PUBACK, a confirmation) until the previous one is acknowledged, and the
 * peer delays that ACK by up to 40 ms when it has nothing to send back.
 * Measured: storage's confirmations then took ~25-50 ms instead of ~1 ms. */
#ifndef SF_NET_H
#define SF_NET_H

/* Sets TCP_NODELAY on every connected TCP socket of this process whose peer
 * port is `port`. Returns how many it set, or -1 with errno when the
 * process's descriptors cannot be listed. */
int net_nodelay_to_port(int port);

/* The port of a tcp://host:port (or mqtt://, ws://...) URL; `def` when it has
 * none or it is not a number in 1..65535. */
int net_url_port(const char *url, int def);

#endif
