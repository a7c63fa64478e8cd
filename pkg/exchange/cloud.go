package exchange

import (
	"net/url"
	"strings"
)

// publicResourceManager is the Azure Resource Manager endpoint of the
// public cloud.
const publicResourceManager = "https://management.azure.com/"

// resourceManager maps the Entra host of a national cloud to its Resource
// Manager endpoint (azure-sdk-for-go azcore/cloud configurations, az cloud
// show), "" when unknown.
func resourceManager(host string) string {
	switch strings.ToLower(host) {
	case "login.microsoftonline.com", "login.microsoft.com", "login.windows.net", "sts.windows.net":
		return publicResourceManager
	case "login.microsoftonline.us", "login-us.microsoftonline.com", "login.usgovcloudapi.net":
		return "https://management.usgovcloudapi.net/"
	case "login.chinacloudapi.cn", "login.partner.microsoftonline.cn":
		return "https://management.chinacloudapi.cn/"
	}
	return ""
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
	if rm := resourceManager(u.Hostname()); rm != "" {
		return rm, true
	}
	return publicResourceManager, false
}
