/*
 * network.c
 *		webhook.blocked_networks: address ranges the worker never connects to.
 *
 * The check is made on the address libcurl is about to connect to, after
 * name resolution, so a host name that resolves into a blocked range is
 * refused as surely as the address itself.
 */
#include "webhook.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "utils/guc.h"

typedef struct BlockedNetwork
{
	int			family;			/* AF_INET or AF_INET6 */
	unsigned char addr[16];
	int			bits;
} BlockedNetwork;

typedef struct BlockedNetworks
{
	int			n;
	BlockedNetwork nets[FLEXIBLE_ARRAY_MEMBER];
} BlockedNetworks;

char	   *webhook_blocked_networks = NULL;
static const BlockedNetworks *blocked = NULL;

static bool
parse_network(const char *text, BlockedNetwork *net)
{
	char		addr[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(text, '/');
	size_t		len = slash ? (size_t) (slash - text) : strlen(text);
	int			max_bits;

	if (len == 0 || len > INET6_ADDRSTRLEN)
		return false;
	memcpy(addr, text, len);
	addr[len] = '\0';
	memset(net, 0, sizeof(*net));
	if (inet_pton(AF_INET, addr, net->addr) == 1)
	{
		net->family = AF_INET;
		max_bits = 32;
	}
	else if (inet_pton(AF_INET6, addr, net->addr) == 1)
	{
		net->family = AF_INET6;
		max_bits = 128;
	}
	else
		return false;

	net->bits = max_bits;
	if (slash)
	{
		char	   *end;
		long		bits = strtol(slash + 1, &end, 10);

		if (*(slash + 1) == '\0' || *end != '\0' || bits < 0 || bits > max_bits)
			return false;
		net->bits = (int) bits;
	}
	return true;
}

bool
webhook_check_blocked_networks(char **newval, void **extra, int source)
{
	char	   *copy = pstrdup(*newval);
	char	   *save = NULL;
	int			count = 0;
	BlockedNetworks *result;

	for (char *p = copy; *p; p++)
		if (*p == ',')
			count++;
	result = malloc(offsetof(BlockedNetworks, nets) + sizeof(BlockedNetwork) * (count + 1));
	if (result == NULL)
		return false;
	result->n = 0;
	for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save))
	{
		if (result->n > count || !parse_network(tok, &result->nets[result->n]))
		{
			GUC_check_errdetail("\"%s\" is not an address range such as 169.254.0.0/16 or fe80::/10.", tok);
			free(result);
			pfree(copy);
			return false;
		}
		result->n++;
	}
	pfree(copy);
	*extra = result;
	return true;
}

void
webhook_assign_blocked_networks(const char *newval, void *extra)
{
	blocked = extra;
}

static bool
in_network(const unsigned char *addr, const BlockedNetwork *net)
{
	int			whole = net->bits / 8;
	int			rest = net->bits % 8;

	if (memcmp(addr, net->addr, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((addr[whole] ^ net->addr[whole]) & (0xFF << (8 - rest))) == 0;
}

/* Whether the worker must not connect to this address. */
bool
webhook_address_blocked(const struct sockaddr *sa)
{
	const unsigned char *addr;
	int			family = sa->sa_family;

	if (blocked == NULL)
		return false;
	if (family == AF_INET)
		addr = (const unsigned char *) &((const struct sockaddr_in *) sa)->sin_addr;
	else if (family == AF_INET6)
	{
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *) sa)->sin6_addr;

		addr = a6->s6_addr;
		/* an IPv4 address in IPv6 clothes is judged as IPv4 */
		if (IN6_IS_ADDR_V4MAPPED(a6))
		{
			addr += 12;
			family = AF_INET;
		}
	}
	else
		return false;

	for (int i = 0; i < blocked->n; i++)
		if (blocked->nets[i].family == family && in_network(addr, &blocked->nets[i]))
			return true;
	return false;
}
