// Package exchange turns an IMDS token request into a Microsoft Entra access
// token by exchanging the pod's projected service-account token (workload
// identity federation, client-credentials grant with a JWT client assertion)
// through MSAL Go, and owns the one token cache of the proxy.
package exchange
