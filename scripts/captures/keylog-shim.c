/* An LD_PRELOAD shim that writes the TLS secrets of every OpenSSL connection of a process to the NSS key log
 * file named by $SSLKEYLOGFILE, for clients that have no key-log option of their own (Qpid Proton's C library).
 * scripts/record-captures-amqp10 builds it into a temporary directory:
 *   cc -shared -fPIC -O2 -o keylog-shim.so scripts/captures/keylog-shim.c -ldl
 * It wraps SSL_new(): before the real one creates the connection, it installs a keylog callback on the SSL_CTX
 * unless the program set one itself. The callback appends each line OpenSSL hands it
 * ("CLIENT_HANDSHAKE_TRAFFIC_SECRET <client random> <secret>", ...) to the file, one write(2) with O_APPEND.
 * The real functions come from dlsym(RTLD_NEXT), or, when libssl was loaded by dlopen(RTLD_LOCAL) (a Python
 * extension module such as Proton's _cproton), from the already loaded libssl (dlopen RTLD_NOLOAD). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/ssl.h>

typedef SSL *(*ssl_new_fn)(SSL_CTX *);
typedef void (*set_cb_fn)(SSL_CTX *, SSL_CTX_keylog_cb_func);
typedef SSL_CTX_keylog_cb_func (*get_cb_fn)(const SSL_CTX *);

static void keylog_line(const SSL *ssl, const char *line) {
    (void)ssl;
    const char *path = getenv("SSLKEYLOGFILE");
    if (path == NULL || *path == '\0' || line == NULL) return;
    size_t n = strlen(line);
    char *buf = malloc(n + 1);
    if (buf == NULL) return;
    memcpy(buf, line, n);
    buf[n] = '\n';
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
        ssize_t w = write(fd, buf, n + 1);
        (void)w;
        close(fd);
    }
    free(buf);
}

SSL *SSL_new(SSL_CTX *ctx) {
    static ssl_new_fn real_new;
    static set_cb_fn set_cb;
    static get_cb_fn get_cb;
    if (real_new == NULL) {
        void *lib = RTLD_NEXT;
        if (dlsym(lib, "SSL_new") == NULL) lib = dlopen("libssl.so.3", RTLD_LAZY | RTLD_NOLOAD);
        if (lib == NULL) lib = dlopen("libssl.so", RTLD_LAZY | RTLD_NOLOAD);
        if (lib != NULL) {
            real_new = (ssl_new_fn)dlsym(lib, "SSL_new");
            set_cb = (set_cb_fn)dlsym(lib, "SSL_CTX_set_keylog_callback");
            get_cb = (get_cb_fn)dlsym(lib, "SSL_CTX_get_keylog_callback");
        }
        if (real_new == NULL || real_new == SSL_new) {
            static const char msg[] = "keylog-shim: cannot find the real SSL_new\n";
            ssize_t w = write(2, msg, sizeof msg - 1);
            (void)w;
            real_new = NULL;
            return NULL;
        }
    }
    if (ctx != NULL && set_cb != NULL && get_cb != NULL && get_cb(ctx) == NULL) set_cb(ctx, keylog_line);
    return real_new(ctx);
}
