package exchange

import "strings"

const defaultScopeSuffix = "/.default"

// scopeFor maps an IMDS resource to the client-credentials scope: the
// resource verbatim plus "/.default", unless it already ends with it.
// Entra derives a v1 audience from everything before the last slash, so
// "https://database.windows.net/" must become
// "https://database.windows.net//.default" to keep its trailing slash
// (azure-workload-identity pkg/proxy getScope does the same; see
// docs/imds.md).
func scopeFor(resource string) string {
	if strings.HasSuffix(resource, defaultScopeSuffix) {
		return resource
	}
	return resource + defaultScopeSuffix
}
