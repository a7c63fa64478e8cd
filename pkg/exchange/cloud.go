package exchange

import (
	"net/url"
	"strings"
)

// publicResourceManager is the Azure Resource Manager endpoint of the
// public cloud.
const publicResourceManager = "https://management.azure.com/"

// resourceManagers maps the Entra hosts of the national clouds to their
// Resource Manager endpoints (azure-sdk-for-go azcore/cloud configurations,
// az cloud show).
var resourceManagers = map[string]string{
	"login.microsoftonline.com":        publicResourceManager,
	"login.microsoft.com":              publicResourceManager,
	"login.windows.net":                publicResourceManager,
	"sts.windows.net":                  publicResourceManager,
	"login.microsoftonline.us":         "https://management.usgovcloudapi.net/",
	"login-us.microsoftonline.com":     "https://management.usgovcloudapi.net/",
	"login.usgovcloudapi.net":          "https://management.usgovcloudapi.net/",
	"login.chinacloudapi.cn":           "https://management.chinacloudapi.cn/",
	"login.partner.microsoftonline.cn": "https://management.chinacloudapi.cn/",
}

// ResourceManagerFor returns the Resource Manager endpoint of the cloud an
// authority host belongs to, the warm-up resource of SPEC §3.7. For a host
// it does not know (a private cloud, a local emulator) it returns the
// public-cloud endpoint and false.
func ResourceManagerFor(authorityHost string) (string, bool) {
	u, err := url.Parse(authorityHost)
	if err != nil {
		return publicResourceManager, false
	}
	rm, ok := resourceManagers[strings.ToLower(u.Hostname())]
	if !ok {
		return publicResourceManager, false
	}
	return rm, true
}
