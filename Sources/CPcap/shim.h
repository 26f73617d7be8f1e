#ifndef AMQPSCOPE_CPCAP_SHIM_H
#define AMQPSCOPE_CPCAP_SHIM_H
#include <pcap/pcap.h>
#endif
