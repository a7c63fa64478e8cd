package depsprobe

import (
	_ "github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	_ "github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	_ "github.com/Azure/go-autorest/autorest/adal"
	_ "github.com/AzureAD/microsoft-authentication-library-for-go/apps/cache"
	_ "github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	_ "github.com/AzureAD/microsoft-authentication-library-for-go/apps/managedidentity"
	_ "github.com/coreos/go-iptables/iptables"
	_ "github.com/go-logr/logr"
	_ "github.com/go-logr/logr/funcr"
	_ "github.com/go-logr/logr/testr"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/prometheus/client_golang/prometheus/testutil"
	_ "github.com/spf13/cobra"
	_ "golang.org/x/sync/singleflight"
	_ "k8s.io/api/apps/v1"
	_ "k8s.io/api/batch/v1"
	_ "k8s.io/api/core/v1"
	_ "sigs.k8s.io/yaml"
)
