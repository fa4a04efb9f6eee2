/* net.c -- socket settings our libraries do not make themselves. */
#include "net.h"

#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int net_nodelay_to_port(int port)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0, dfd = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end || end == e->d_name || fd == dfd)
            continue;
        int type = 0, one = 1;
        socklen_t tl = sizeof type;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM ||
            getpeername((int)fd, (struct sockaddr *)&ss, &sl) != 0)
            continue;   /* not a socket, not a stream, or not connected */
        int peer;
        if (ss.ss_family == AF_INET)
            peer = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            peer = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        else
            continue;
        if (peer == port && setsockopt((int)fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0)
            n++;
    }
    closedir(d);
    return n;
}

int net_url_port(const char *url, int def)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *end = p + strcspn(p, "/?#");
    const char *colon = NULL;
    for (const char *q = p; q < end; q++)   /* the last ':' outside [v6] */
        if (*q == ':')
            colon = q;
        else if (*q == ']')
            colon = NULL;
    if (!colon)
        return def;
    char *stop;
    long v = strtol(colon + 1, &stop, 10);
    return stop == end && stop != colon + 1 && v >= 1 && v <= 65535 ? (int)v : def;
}
