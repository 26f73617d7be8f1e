#!/usr/bin/env python3
"""A pika client that never services its connection: the incident amqpscope exists for.

    scripts/live-client.py silent SECONDS   heartbeat 2 s, publish, sleep SECONDS without servicing, publish again
    scripts/live-client.py healthy          connect, publish, close cleanly
    scripts/live-client.py tls KEYLOG CA    the healthy run over TLS on 5671, writing the NSS key log to KEYLOG

Prints one line: the result of the last publish (the exception class and errno when it fails).
"""
import ssl
import sys
import time

import pika


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "silent"
    tls = {}
    if mode == "tls":
        context = ssl.create_default_context(cafile=sys.argv[3])
        context.keylog_filename = sys.argv[2]
        tls = {"port": 5671, "ssl_options": pika.SSLOptions(context, "localhost")}
    params = pika.ConnectionParameters(host="127.0.0.1", port=tls.get("port", 5672), heartbeat=2,
                                       ssl_options=tls.get("ssl_options"),
                                       client_properties={"connection_name": f"amqpscope-live-{mode}"})
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    channel.basic_publish(exchange="", routing_key="amqpscope.live", body=b"first")
    if mode in ("healthy", "tls"):
        connection.close()
        print("healthy: closed")
        return
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 15)  # no process_data_events: pika sends no heartbeats
    try:
        channel.basic_publish(exchange="", routing_key="amqpscope.live", body=b"second")
        print("second publish: no error")
    except Exception as error:  # pika wraps the socket error; keep its text (it carries the errno)
        print(f"second publish: {type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
