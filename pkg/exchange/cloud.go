package exchange

import (
	"net/url"
	"strings"
)

// publicResourceManager is the Azure Resource Manager endpoint of the
// public cloud.
const publicResourceManager = "https://management.azure.com/"

// cloudHost is what the proxy knows about one Entra authority host.
type cloudHost struct {
	// resourceManager is the Resource Manager endpoint of the host's cloud
	// (azure-sdk-for-go azcore/cloud configurations, az cloud show), ""
	// when the proxy does not know it.
	resourceManager string
}

// cloudHosts is the one table of Entra authority hosts: exactly the hosts
// MSAL Go trusts without instance discovery (MSAL Go v1.10.1
// apps/internal/oauth/ops/authority aadTrustedHostList), keyed in lower
// case, each with its cloud's Resource Manager endpoint where known.
var cloudHosts = map[string]cloudHost{
	// Public cloud.
	"login.microsoftonline.com": {resourceManager: publicResourceManager},
	"login.microsoft.com":       {resourceManager: publicResourceManager},
	"login.windows.net":         {resourceManager: publicResourceManager},
	"sts.windows.net":           {resourceManager: publicResourceManager},
	// US Government.
	"login.microsoftonline.us":     {resourceManager: "https://management.usgovcloudapi.net/"},
	"login-us.microsoftonline.com": {resourceManager: "https://management.usgovcloudapi.net/"},
	"login.usgovcloudapi.net":      {resourceManager: "https://management.usgovcloudapi.net/"},
	// China (21Vianet).
	"login.chinacloudapi.cn":           {resourceManager: "https://management.chinacloudapi.cn/"},
	"login.partner.microsoftonline.cn": {resourceManager: "https://management.chinacloudapi.cn/"},
	// Germany (retired) and the sovereign clouds: trusted by MSAL, Resource
	// Manager endpoint not known here.
	"login.microsoftonline.de":   {},
	"login.sovcloud-identity.fr": {},
	"login.sovcloud-identity.de": {},
	"login.sovcloud-identity.sg": {},
}

// lookupCloudHost finds the authority host of an AZURE_AUTHORITY_HOST
// value in cloudHosts.
func lookupCloudHost(authorityHost string) (cloudHost, bool) {
	u, err := url.Parse(authorityHost)
	if err != nil {
		return cloudHost{}, false
	}
	c, ok := cloudHosts[strings.ToLower(u.Hostname())]
	return c, ok
}

// ResourceManagerFor returns the Resource Manager endpoint of the cloud an
// authority host belongs to: the resource of the --probe warm-up request,
// which every identity may ask a token for. For a host it does not know (a
// private cloud, a local emulator) it returns the public-cloud endpoint and
// false; an invalid_resource answer to the warm-up still proves that the
// federation works.
func ResourceManagerFor(authorityHost string) (string, bool) {
	if c, ok := lookupCloudHost(authorityHost); ok && c.resourceManager != "" {
		return c.resourceManager, true
	}
	return publicResourceManager, false
}

// instanceDiscovery reports whether MSAL's instance discovery (authority
// validation) should stay on for the authority host.
//
// For the hosts MSAL trusts, validation never makes a network call (MSAL Go
// v1.10.1 resolvers.go openIDConfigurationEndpoint skips it for
// authority.TrustedHost), so leaving it on costs nothing. For any other host
// (a private or air-gapped cloud, the local emulator) MSAL would ask
// https://login.microsoftonline.com/common/discovery/instance first, which
// such a pod usually cannot reach, and the operator chose the host
// explicitly through AZURE_AUTHORITY_HOST, so there is nothing to validate
// (azidentity exposes the same switch as DisableInstanceDiscovery).
func instanceDiscovery(authorityHost string) bool {
	_, ok := lookupCloudHost(authorityHost)
	return ok
}
