package entraemu

import (
	"net/http"
)

// handleEmptyList answers the Resource Manager subscription and tenant
// listings with an empty list, which is what `az login --identity
// --allow-no-subscriptions` needs to finish. The bearer token is checked
// only for logging: a token this emulator did not issue is logged at info
// level but still answered, so a client-side mistake shows in the log.
func (e *Emulator) handleEmptyList(w http.ResponseWriter, r *http.Request) {
	const prefix = "Bearer "
	auth := r.Header.Get("Authorization")
	switch {
	case len(auth) <= len(prefix) || auth[:len(prefix)] != prefix:
		e.log.Info("Resource Manager listing without a bearer token", "path", r.URL.Path)
	default:
		if c, err := e.VerifyAccessToken(auth[len(prefix):]); err != nil {
			e.log.Info("Resource Manager listing with a token the emulator did not issue", "path", r.URL.Path, "reason", err.Error())
		} else {
			e.log.V(1).Info("Resource Manager listing", "path", r.URL.Path, "appid", c.AppID, "aud", c.Audience)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": []any{}})
}

// handleCloudMetadata answers GET /metadata/endpoints, which
// `az cloud register --endpoint-resource-manager` reads to fill in the Active
// Directory endpoints it was not given. Every endpoint points at this
// emulator. api-version 2019-05-01 and later get the array form, older
// versions the single-object form.
func (e *Emulator) handleCloudMetadata(w http.ResponseWriter, r *http.Request) {
	base := e.baseURL(r) + "/"
	audiences := []string{"https://management.core.windows.net/", "https://management.azure.com/"}
	v := r.URL.Query().Get("api-version")
	if v != "" && v < "2019-05-01" {
		writeJSON(w, http.StatusOK, map[string]any{
			"galleryEndpoint": base,
			"graphEndpoint":   "https://graph.windows.net/",
			"portalEndpoint":  base,
			"authentication": map[string]any{
				"loginEndpoint": base,
				"audiences":     audiences,
			},
		})
		return
	}
	writeJSON(w, http.StatusOK, []any{map[string]any{
		"portal":                  base,
		"authentication":          map[string]any{"loginEndpoint": base, "audiences": audiences, "tenant": "common", "identityProvider": "AAD"},
		"media":                   base,
		"graphAudience":           "https://graph.windows.net/",
		"graph":                   "https://graph.windows.net/",
		"name":                    "AzureEmulator",
		"suffixes":                map[string]any{"azureDataLakeStoreFileSystem": "azuredatalakestore.net", "acrLoginServer": "azurecr.io", "sqlServerHostname": "database.windows.net", "azureDataLakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.net", "keyVaultDns": "vault.azure.net", "storage": "core.windows.net", "azureFrontDoorEndpointSuffix": "azurefd.net"},
		"batch":                   "https://batch.core.windows.net/",
		"resourceManager":         base,
		"vmImageAliasDoc":         base + "vmimagealiases.json",
		"activeDirectoryDataLake": "https://datalake.azure.net/",
		"sqlManagement":           "https://management.core.windows.net:8443/",
		"gallery":                 base,
	}})
}
