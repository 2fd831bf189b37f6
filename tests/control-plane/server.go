package main

// Server assembly, chained like kube-apiserver (minus the aggregator):
// built-in kinds -> apiextensions-apiserver (CRDs) -> NotFound.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	restful "github.com/emicklei/go-restful/v3"
	noopoteltrace "go.opentelemetry.io/otel/trace/noop"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsv1beta1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1beta1"
	apiextensionsapiserver "k8s.io/apiextensions-apiserver/pkg/apiserver"
	apiextensionsoptions "k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/admission/plugin/namespace/lifecycle"
	discoveryendpoint "k8s.io/apiserver/pkg/endpoints/discovery/aggregated"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	serverstorage "k8s.io/apiserver/pkg/server/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	builder2 "k8s.io/kube-openapi/pkg/builder"
	"k8s.io/kube-openapi/pkg/builder3"
	"k8s.io/kube-openapi/pkg/common"
	"k8s.io/kube-openapi/pkg/common/restfuladapter"
	"k8s.io/kube-openapi/pkg/handler"
)

type testServer struct {
	top             *genericapiserver.GenericAPIServer
	ext             *apiextensionsapiserver.CustomResourceDefinitions
	openAPIConfig   *common.Config
	openAPIV3Config *common.OpenAPIV3Config
}

func newServer(etcdURL string, ln net.Listener, certs *servingCerts, reqLog *requestLogger) (*testServer, error) {
	port := ln.Addr().(*net.TCPAddr).Port
	cfg := genericapiserver.NewRecommendedConfig(Codecs)

	runOpts := genericoptions.NewServerRunOptions()
	runOpts.AdvertiseAddress = net.ParseIP("127.0.0.1")
	if err := runOpts.ApplyTo(&cfg.Config); err != nil {
		return nil, err
	}
	// Watches end when the client goes; shutdown should not wait for them.
	cfg.ShutdownWatchTerminationGracePeriod = 0

	ss := genericoptions.NewSecureServingOptions().WithLoopback()
	ss.Listener, ss.BindPort, ss.BindAddress = ln, port, net.ParseIP("127.0.0.1")
	ss.ServerCert.CertKey = genericoptions.CertKey{CertFile: certs.certFile, KeyFile: certs.keyFile}
	if err := ss.ApplyTo(&cfg.SecureServing, &cfg.LoopbackClientConfig); err != nil {
		return nil, fmt.Errorf("secure serving: %w", err)
	}

	cfg.Authentication.Authenticator = anyTokenAuthenticator{}
	cfg.Authorization.Authorizer = testAuthorizer{}
	cfg.RuleResolver = testAuthorizer{}
	genericapiserver.AuthorizeClientBearerToken(cfg.LoopbackClientConfig, &cfg.Authentication, &cfg.Authorization)

	storageGVs := append(append([]schema.GroupVersion{}, servedGroupVersions...), autoscalingv1.SchemeGroupVersion)
	etcdOpts := genericoptions.NewEtcdOptions(storagebackend.NewDefaultConfig("/registry", Codecs.LegacyCodec(storageGVs...)))
	etcdOpts.StorageConfig.Transport.ServerList = []string{etcdURL}
	etcdOpts.StorageConfig.EncodeVersioner = schema.GroupVersions(storageGVs)
	if err := etcdOpts.ApplyTo(&cfg.Config); err != nil {
		return nil, fmt.Errorf("etcd options: %w", err)
	}

	rc := serverstorage.NewResourceConfig()
	rc.EnableVersions(storageGVs...)
	cfg.MergedResourceConfig = rc

	// Core informers (admission needs them) read from this server itself.
	kubeClient, err := kubernetes.NewForConfig(cfg.LoopbackClientConfig)
	if err != nil {
		return nil, err
	}
	dynClient, err := dynamic.NewForConfig(cfg.LoopbackClientConfig)
	if err != nil {
		return nil, err
	}
	cfg.ClientConfig = cfg.LoopbackClientConfig
	cfg.SharedInformerFactory = informers.NewSharedInformerFactory(kubeClient, 10*time.Minute)

	// Only NamespaceLifecycle: no objects in missing or terminating
	// namespaces, no deleting default/kube-system/kube-public.  (Webhook and
	// policy admission would need admissionregistration.k8s.io.)
	adm := genericoptions.NewAdmissionOptions()
	adm.RecommendedPluginOrder = []string{lifecycle.PluginName}
	if err := adm.ApplyTo(&cfg.Config, cfg.SharedInformerFactory, kubeClient, dynClient, utilfeature.DefaultFeatureGate, cfg.EffectiveVersion); err != nil {
		return nil, fmt.Errorf("admission: %w", err)
	}

	// One aggregated-discovery manager for both servers: /apis lists CRD
	// groups in aggregated form without an aggregator.
	cfg.AggregatedDiscoveryGroupManager = discoveryendpoint.NewResourceManager("apis")

	namer := newDefinitionNamer(Scheme, apiextensionsapiserver.Scheme)
	cfg.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(getDefinitions, namer.DefinitionNamer)
	cfg.OpenAPIConfig.GetDefinitionName = namer.GetDefinitionName
	cfg.OpenAPIConfig.Info.Title = "Kubernetes"
	cfg.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(getDefinitions, namer.DefinitionNamer)
	cfg.OpenAPIV3Config.GetDefinitionName = namer.GetDefinitionName
	cfg.OpenAPIV3Config.Info.Title = "Kubernetes"

	// apiextensions-apiserver: a shallow copy of the config, as
	// kube-apiserver makes it, with its own storage codec.
	extGeneric := cfg.Config
	extGeneric.PostStartHooks = map[string]genericapiserver.PostStartHookConfigEntry{}
	extGeneric.RESTOptionsGetter = nil
	extEtcd := *etcdOpts
	extEtcd.StorageConfig.Codec = apiextensionsapiserver.Codecs.LegacyCodec(apiextensionsv1beta1.SchemeGroupVersion, apiextensionsv1.SchemeGroupVersion)
	extEtcd.StorageConfig.EncodeVersioner = runtime.NewMultiGroupVersioner(apiextensionsv1beta1.SchemeGroupVersion, schema.GroupKind{Group: apiextensionsv1beta1.GroupName})
	extEtcd.SkipHealthEndpoints = true
	if err := extEtcd.ApplyTo(&extGeneric); err != nil {
		return nil, err
	}
	extGeneric.MergedResourceConfig = apiextensionsapiserver.DefaultAPIResourceConfigSource()
	extConfig := &apiextensionsapiserver.Config{
		GenericConfig: &genericapiserver.RecommendedConfig{Config: extGeneric, SharedInformerFactory: cfg.SharedInformerFactory},
		ExtraConfig: apiextensionsapiserver.ExtraConfig{
			CRDRESTOptionsGetter: apiextensionsoptions.NewCRDRESTOptionsGetter(extEtcd, nil, extGeneric.StorageObjectCountTracker),
			ServiceResolver:      webhook.NewDefaultServiceResolver(),
			AuthResolverWrapper:  webhook.NewDefaultAuthenticationInfoResolverWrapper(nil, nil, cfg.LoopbackClientConfig, noopoteltrace.NewTracerProvider()),
			MasterCount:          1,
		},
	}

	// The built-in server is the one that listens: it gets the request log,
	// and serves OpenAPI through the apiextensions server (see mergeOpenAPI).
	if reqLog != nil {
		cfg.BuildHandlerChainFunc = func(apiHandler http.Handler, c *genericapiserver.Config) http.Handler {
			return genericapiserver.DefaultBuildHandlerChain(reqLog.wrap(apiHandler), c)
		}
	}
	cfg.SkipOpenAPIInstallation = true

	ext, err := extConfig.Complete().New(genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, fmt.Errorf("apiextensions server: %w", err)
	}
	completed := cfg.Complete()
	top, err := completed.New("frys-test-apiserver", ext.GenericAPIServer)
	if err != nil {
		return nil, fmt.Errorf("built-in server: %w", err)
	}
	if err := installBuiltins(top, completed.RESTOptionsGetter); err != nil {
		return nil, err
	}

	top.DiscoveryGroupManager.AddGroup(metav1.APIGroup{
		Name:             apiextensionsv1.GroupName,
		Versions:         []metav1.GroupVersionForDiscovery{{GroupVersion: apiextensionsv1.SchemeGroupVersion.String(), Version: "v1"}},
		PreferredVersion: metav1.GroupVersionForDiscovery{GroupVersion: apiextensionsv1.SchemeGroupVersion.String(), Version: "v1"},
	})
	crds := ext.Informers.Apiextensions().V1().CustomResourceDefinitions()
	if err := watchCRDGroups(top.DiscoveryGroupManager, crds.Informer(), crds.Lister()); err != nil {
		return nil, err
	}
	if err := top.AddPostStartHook("frys-system-namespaces", createSystemNamespaces); err != nil {
		return nil, err
	}
	return &testServer{top: top, ext: ext, openAPIConfig: cfg.OpenAPIConfig, openAPIV3Config: cfg.OpenAPIV3Config}, nil
}

type runner interface {
	RunWithContext(ctx context.Context) error
}

func (s *testServer) prepareRun() (runner, error) {
	prepared := s.top.PrepareRun()
	if err := s.mergeOpenAPI(); err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	return prepared, nil
}

// mergeOpenAPI adds the built-in paths to the OpenAPI v2 and v3 documents
// that the apiextensions server serves (and keeps updated with CRDs).
// kube-apiserver's aggregator merges specs like this; here the built-in
// server skips its own OpenAPI endpoints so /openapi/* falls through to the
// delegate.
func (s *testServer) mergeOpenAPI() error {
	services := s.top.Handler.GoRestfulContainer.RegisteredWebServices()
	v2, err := builder2.BuildOpenAPISpecFromRoutes(restfuladapter.AdaptWebServices(services), s.openAPIConfig)
	if err != nil {
		return err
	}
	static := s.ext.GenericAPIServer.StaticOpenAPISpec
	if static == nil || s.ext.GenericAPIServer.OpenAPIVersionedService == nil || s.ext.GenericAPIServer.OpenAPIV3VersionedService == nil {
		return fmt.Errorf("apiextensions server has no OpenAPI service")
	}
	for path, item := range v2.Paths.Paths {
		if _, ok := static.Paths.Paths[path]; !ok {
			static.Paths.Paths[path] = item
		}
	}
	for name, def := range handler.PruneDefaults(v2.Definitions) {
		if _, ok := static.Definitions[name]; !ok {
			static.Definitions[name] = def
		}
	}
	if err := s.ext.GenericAPIServer.OpenAPIVersionedService.UpdateSpec(static); err != nil {
		return err
	}

	for _, ws := range services {
		gv := strings.TrimPrefix(ws.RootPath(), "/")
		parts := strings.Split(gv, "/")
		if !(parts[0] == "api" && len(parts) == 2) && !(parts[0] == "apis" && len(parts) == 3) {
			continue
		}
		v3, err := builder3.BuildOpenAPISpecFromRoutes(restfuladapter.AdaptWebServices([]*restful.WebService{ws}), s.openAPIV3Config)
		if err != nil {
			return fmt.Errorf("%s: %w", gv, err)
		}
		s.ext.GenericAPIServer.OpenAPIV3VersionedService.UpdateGroupVersion(gv, v3)
	}
	return nil
}

// createSystemNamespaces creates the namespaces every cluster has.
func createSystemNamespaces(hookCtx genericapiserver.PostStartHookContext) error {
	client, err := kubernetes.NewForConfig(hookCtx.LoopbackClientConfig)
	if err != nil {
		return err
	}
	return wait.PollUntilContextCancel(hookCtx.Context, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		for _, name := range []string{metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic, corev1.NamespaceNodeLease} {
			_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				klog.V(2).InfoS("creating namespace, will retry", "namespace", name, "err", err)
				return false, nil
			}
		}
		return true, nil
	})
}
