package main

// Built-in kinds: the k8s.io/api external Go types, registered a second time
// as the __internal version of their group (so the scheme needs no conversion
// functions), each served by a real generic registry.Store with a small
// strategy.  There is no per-type validation and almost no defaulting: the
// code that does that lives in k8s.io/kubernetes, which is not packaged.

import (
	"context"
	"fmt"
	"reflect"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/registry/customresource/tableconvertor"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

var (
	// Scheme holds the built-in kinds served by this server.
	Scheme = runtime.NewScheme()
	// Codecs serializes Scheme's kinds.
	Codecs = serializer.NewCodecFactory(Scheme)
)

// kindInfo describes one served built-in resource.
type kindInfo struct {
	gv         schema.GroupVersion
	resource   string // plural
	singular   string
	kind       string
	namespaced bool
	newObj     func() runtime.Object
	newList    func() runtime.Object
	status     bool // has a /status subresource (status only writable there)
	scale      bool // has a /scale subresource (spec.replicas)
	shortNames []string
	categories []string
	columns    []apiextensionsv1.CustomResourceColumnDefinition
	// fields returns selectable fields beyond metadata.name/namespace.
	fields func(obj runtime.Object) fields.Set
	// prepare runs on create (the little defaulting this server does).
	prepare func(obj runtime.Object)
	// storageResource shares etcd storage with another resource (events).
	storageResource *schema.GroupResource
}

func col(name, typ, path string) apiextensionsv1.CustomResourceColumnDefinition {
	return apiextensionsv1.CustomResourceColumnDefinition{Name: name, Type: typ, JSONPath: path}
}

var ageColumn = col("Age", "date", ".metadata.creationTimestamp")

var (
	coreGV         = corev1.SchemeGroupVersion
	appsGV         = appsv1.SchemeGroupVersion
	autoscalingGV  = autoscalingv2.SchemeGroupVersion
	coordinationGV = coordinationv1.SchemeGroupVersion
	discoveryGV    = discoveryv1.SchemeGroupVersion
	eventsGV       = eventsv1.SchemeGroupVersion
	policyGV       = policyv1.SchemeGroupVersion
	rbacGV         = rbacv1.SchemeGroupVersion
)

// servedGroupVersions in discovery order (core first: storage encodes
// objects to the first matching group version, which makes events.k8s.io
// Events stored as core v1 Events, as in kube-apiserver).
var servedGroupVersions = []schema.GroupVersion{
	coreGV, appsGV, autoscalingGV, coordinationGV, discoveryGV, eventsGV, policyGV, rbacGV,
}

var coreEvents = schema.GroupResource{Resource: "events"}

var builtinKinds = []kindInfo{
	{gv: coreGV, resource: "namespaces", singular: "namespace", kind: "Namespace", newObj: func() runtime.Object { return &corev1.Namespace{} }, newList: func() runtime.Object { return &corev1.NamespaceList{} },
		status: true, shortNames: []string{"ns"}, columns: []apiextensionsv1.CustomResourceColumnDefinition{col("Status", "string", ".status.phase"), ageColumn},
		fields: func(o runtime.Object) fields.Set {
			return fields.Set{"status.phase": string(o.(*corev1.Namespace).Status.Phase)}
		},
		prepare: func(o runtime.Object) {
			ns := o.(*corev1.Namespace)
			ns.Status = corev1.NamespaceStatus{Phase: corev1.NamespaceActive}
			// Namespaces carry their name as a label since Kubernetes 1.21.
			if ns.Labels == nil {
				ns.Labels = map[string]string{}
			}
			ns.Labels[corev1.LabelMetadataName] = ns.Name
		}},
	{gv: coreGV, resource: "services", singular: "service", kind: "Service", namespaced: true, newObj: func() runtime.Object { return &corev1.Service{} }, newList: func() runtime.Object { return &corev1.ServiceList{} },
		status: true, shortNames: []string{"svc"}, categories: []string{"all"},
		columns: []apiextensionsv1.CustomResourceColumnDefinition{col("Type", "string", ".spec.type"), col("Cluster-IP", "string", ".spec.clusterIP"), ageColumn},
		prepare: func(o runtime.Object) {
			if s := o.(*corev1.Service); s.Spec.Type == "" {
				s.Spec.Type = corev1.ServiceTypeClusterIP
			}
		}},
	{gv: coreGV, resource: "configmaps", singular: "configmap", kind: "ConfigMap", namespaced: true, newObj: func() runtime.Object { return &corev1.ConfigMap{} }, newList: func() runtime.Object { return &corev1.ConfigMapList{} },
		shortNames: []string{"cm"}, columns: []apiextensionsv1.CustomResourceColumnDefinition{ageColumn}},
	{gv: coreGV, resource: "secrets", singular: "secret", kind: "Secret", namespaced: true, newObj: func() runtime.Object { return &corev1.Secret{} }, newList: func() runtime.Object { return &corev1.SecretList{} },
		columns: []apiextensionsv1.CustomResourceColumnDefinition{col("Type", "string", ".type"), ageColumn},
		fields:  func(o runtime.Object) fields.Set { return fields.Set{"type": string(o.(*corev1.Secret).Type)} },
		prepare: func(o runtime.Object) {
			s := o.(*corev1.Secret)
			if s.Type == "" {
				s.Type = corev1.SecretTypeOpaque
			}
			// stringData is write-only: merge it into data as kube-apiserver does.
			for k, v := range s.StringData {
				if s.Data == nil {
					s.Data = map[string][]byte{}
				}
				s.Data[k] = []byte(v)
			}
			s.StringData = nil
		}},
	{gv: coreGV, resource: "pods", singular: "pod", kind: "Pod", namespaced: true, newObj: func() runtime.Object { return &corev1.Pod{} }, newList: func() runtime.Object { return &corev1.PodList{} },
		status: true, shortNames: []string{"po"}, categories: []string{"all"},
		columns: []apiextensionsv1.CustomResourceColumnDefinition{col("Status", "string", ".status.phase"), col("Node", "string", ".spec.nodeName"), ageColumn},
		fields: func(o runtime.Object) fields.Set {
			p := o.(*corev1.Pod)
			return fields.Set{
				"spec.nodeName": p.Spec.NodeName, "spec.restartPolicy": string(p.Spec.RestartPolicy),
				"spec.schedulerName": p.Spec.SchedulerName, "spec.serviceAccountName": p.Spec.ServiceAccountName,
				"spec.hostNetwork": fmt.Sprint(p.Spec.HostNetwork), "status.phase": string(p.Status.Phase),
				"status.podIP": p.Status.PodIP, "status.nominatedNodeName": p.Status.NominatedNodeName,
			}
		},
		prepare: func(o runtime.Object) {
			p := o.(*corev1.Pod)
			p.Status = corev1.PodStatus{Phase: corev1.PodPending}
		}},
	{gv: coreGV, resource: "events", singular: "event", kind: "Event", namespaced: true, newObj: func() runtime.Object { return &corev1.Event{} }, newList: func() runtime.Object { return &corev1.EventList{} },
		shortNames: []string{"ev"}, fields: eventFields,
		columns: []apiextensionsv1.CustomResourceColumnDefinition{col("Type", "string", ".type"), col("Reason", "string", ".reason"), col("Object", "string", ".involvedObject.name"), col("Message", "string", ".message"), ageColumn}},
	{gv: coreGV, resource: "serviceaccounts", singular: "serviceaccount", kind: "ServiceAccount", namespaced: true, newObj: func() runtime.Object { return &corev1.ServiceAccount{} }, newList: func() runtime.Object { return &corev1.ServiceAccountList{} },
		shortNames: []string{"sa"}, columns: []apiextensionsv1.CustomResourceColumnDefinition{ageColumn}},
	{gv: coreGV, resource: "endpoints", singular: "endpoints", kind: "Endpoints", namespaced: true, newObj: func() runtime.Object { return &corev1.Endpoints{} }, newList: func() runtime.Object { return &corev1.EndpointsList{} },
		shortNames: []string{"ep"}, columns: []apiextensionsv1.CustomResourceColumnDefinition{ageColumn}},
	{gv: discoveryGV, resource: "endpointslices", singular: "endpointslice", kind: "EndpointSlice", namespaced: true, newObj: func() runtime.Object { return &discoveryv1.EndpointSlice{} }, newList: func() runtime.Object { return &discoveryv1.EndpointSliceList{} },
		columns: []apiextensionsv1.CustomResourceColumnDefinition{col("AddressType", "string", ".addressType"), ageColumn}},
	{gv: appsGV, resource: "deployments", singular: "deployment", kind: "Deployment", namespaced: true, newObj: func() runtime.Object { return &appsv1.Deployment{} }, newList: func() runtime.Object { return &appsv1.DeploymentList{} },
		status: true, scale: true, shortNames: []string{"deploy"}, categories: []string{"all"},
		columns: []apiextensionsv1.CustomResourceColumnDefinition{col("Replicas", "integer", ".spec.replicas"), col("Ready", "integer", ".status.readyReplicas"), col("Up-to-date", "integer", ".status.updatedReplicas"), col("Available", "integer", ".status.availableReplicas"), ageColumn},
		prepare: func(o runtime.Object) { defaultDeployment(o.(*appsv1.Deployment)) }},
	{gv: appsGV, resource: "replicasets", singular: "replicaset", kind: "ReplicaSet", namespaced: true, newObj: func() runtime.Object { return &appsv1.ReplicaSet{} }, newList: func() runtime.Object { return &appsv1.ReplicaSetList{} },
		status: true, scale: true, shortNames: []string{"rs"}, categories: []string{"all"},
		columns: []apiextensionsv1.CustomResourceColumnDefinition{col("Desired", "integer", ".spec.replicas"), col("Current", "integer", ".status.replicas"), col("Ready", "integer", ".status.readyReplicas"), ageColumn},
		prepare: func(o runtime.Object) {
			if rs := o.(*appsv1.ReplicaSet); rs.Spec.Replicas == nil {
				rs.Spec.Replicas = ptrTo(int32(1))
			}
		}},
	{gv: autoscalingGV, resource: "horizontalpodautoscalers", singular: "horizontalpodautoscaler", kind: "HorizontalPodAutoscaler", namespaced: true, newObj: func() runtime.Object { return &autoscalingv2.HorizontalPodAutoscaler{} }, newList: func() runtime.Object { return &autoscalingv2.HorizontalPodAutoscalerList{} },
		status: true, shortNames: []string{"hpa"}, categories: []string{"all"},
		columns: []apiextensionsv1.CustomResourceColumnDefinition{col("Reference", "string", ".spec.scaleTargetRef.name"), col("MinPods", "integer", ".spec.minReplicas"), col("MaxPods", "integer", ".spec.maxReplicas"), col("Replicas", "integer", ".status.currentReplicas"), ageColumn}},
	{gv: coordinationGV, resource: "leases", singular: "lease", kind: "Lease", namespaced: true, newObj: func() runtime.Object { return &coordinationv1.Lease{} }, newList: func() runtime.Object { return &coordinationv1.LeaseList{} },
		columns: []apiextensionsv1.CustomResourceColumnDefinition{col("Holder", "string", ".spec.holderIdentity"), ageColumn}},
	{gv: eventsGV, resource: "events", singular: "event", kind: "Event", namespaced: true, newObj: func() runtime.Object { return &corev1.Event{} }, newList: func() runtime.Object { return &corev1.EventList{} },
		shortNames: []string{"ev"}, fields: eventFields, storageResource: &coreEvents,
		columns: []apiextensionsv1.CustomResourceColumnDefinition{col("Type", "string", ".type"), col("Reason", "string", ".reason"), col("Object", "string", ".involvedObject.name"), col("Message", "string", ".message"), ageColumn}},
	{gv: policyGV, resource: "poddisruptionbudgets", singular: "poddisruptionbudget", kind: "PodDisruptionBudget", namespaced: true, newObj: func() runtime.Object { return &policyv1.PodDisruptionBudget{} }, newList: func() runtime.Object { return &policyv1.PodDisruptionBudgetList{} },
		status: true, shortNames: []string{"pdb"},
		columns: []apiextensionsv1.CustomResourceColumnDefinition{col("Min Available", "string", ".spec.minAvailable"), col("Max Unavailable", "string", ".spec.maxUnavailable"), col("Allowed Disruptions", "integer", ".status.disruptionsAllowed"), ageColumn}},
	{gv: rbacGV, resource: "roles", singular: "role", kind: "Role", namespaced: true, newObj: func() runtime.Object { return &rbacv1.Role{} }, newList: func() runtime.Object { return &rbacv1.RoleList{} },
		columns: []apiextensionsv1.CustomResourceColumnDefinition{col("Created At", "string", ".metadata.creationTimestamp")}},
	{gv: rbacGV, resource: "clusterroles", singular: "clusterrole", kind: "ClusterRole", newObj: func() runtime.Object { return &rbacv1.ClusterRole{} }, newList: func() runtime.Object { return &rbacv1.ClusterRoleList{} },
		columns: []apiextensionsv1.CustomResourceColumnDefinition{col("Created At", "string", ".metadata.creationTimestamp")}},
	{gv: rbacGV, resource: "rolebindings", singular: "rolebinding", kind: "RoleBinding", namespaced: true, newObj: func() runtime.Object { return &rbacv1.RoleBinding{} }, newList: func() runtime.Object { return &rbacv1.RoleBindingList{} },
		columns: []apiextensionsv1.CustomResourceColumnDefinition{col("Role", "string", ".roleRef.name"), ageColumn}},
	{gv: rbacGV, resource: "clusterrolebindings", singular: "clusterrolebinding", kind: "ClusterRoleBinding", newObj: func() runtime.Object { return &rbacv1.ClusterRoleBinding{} }, newList: func() runtime.Object { return &rbacv1.ClusterRoleBindingList{} },
		columns: []apiextensionsv1.CustomResourceColumnDefinition{col("Role", "string", ".roleRef.name"), ageColumn}},
}

func ptrTo[T any](v T) *T { return &v }

// defaultDeployment applies the apps/v1 defaults a rollback controller is
// likely to read (replicas, revision history, progress deadline, strategy).
func defaultDeployment(d *appsv1.Deployment) {
	if d.Spec.Replicas == nil {
		d.Spec.Replicas = ptrTo(int32(1))
	}
	if d.Spec.RevisionHistoryLimit == nil {
		d.Spec.RevisionHistoryLimit = ptrTo(int32(10))
	}
	if d.Spec.ProgressDeadlineSeconds == nil {
		d.Spec.ProgressDeadlineSeconds = ptrTo(int32(600))
	}
	if d.Spec.Strategy.Type == "" {
		d.Spec.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType
	}
	if d.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType && d.Spec.Strategy.RollingUpdate == nil {
		d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{}
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru != nil {
		if ru.MaxSurge == nil {
			ru.MaxSurge = ptrTo(intstr.FromString("25%"))
		}
		if ru.MaxUnavailable == nil {
			ru.MaxUnavailable = ptrTo(intstr.FromString("25%"))
		}
	}
}

func eventFields(o runtime.Object) fields.Set {
	e := o.(*corev1.Event)
	return fields.Set{
		"involvedObject.kind": e.InvolvedObject.Kind, "involvedObject.namespace": e.InvolvedObject.Namespace,
		"involvedObject.name": e.InvolvedObject.Name, "involvedObject.uid": string(e.InvolvedObject.UID),
		"involvedObject.apiVersion": e.InvolvedObject.APIVersion, "involvedObject.resourceVersion": e.InvolvedObject.ResourceVersion,
		"involvedObject.fieldPath": e.InvolvedObject.FieldPath, "reason": e.Reason,
		"reportingComponent": e.ReportingController, "source": e.Source.Component, "type": e.Type,
	}
}

func init() {
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, autoscalingv1.AddToScheme, autoscalingv2.AddToScheme,
		coordinationv1.AddToScheme, discoveryv1.AddToScheme, eventsv1.AddToScheme, policyv1.AddToScheme,
		rbacv1.AddToScheme,
	} {
		utilruntime.Must(add(Scheme))
	}
	// The internal version of each served kind is its external Go type.
	for _, k := range builtinKinds {
		internal := schema.GroupVersion{Group: k.gv.Group, Version: runtime.APIVersionInternal}
		Scheme.AddKnownTypeWithName(internal.WithKind(k.kind), k.newObj())
		Scheme.AddKnownTypeWithName(internal.WithKind(k.kind+"List"), k.newList())
		if k.fields != nil {
			utilruntime.Must(Scheme.AddFieldLabelConversionFunc(k.gv.WithKind(k.kind), fieldLabelConversion(k.fields(k.newObj()))))
		}
	}
	autoscalingInternal := schema.GroupVersion{Group: autoscalingv1.GroupName, Version: runtime.APIVersionInternal}
	Scheme.AddKnownTypeWithName(autoscalingInternal.WithKind("Scale"), &autoscalingv1.Scale{})
	utilruntime.Must(addEventConversions(Scheme))

	unversioned := schema.GroupVersion{Version: "v1"}
	Scheme.AddUnversionedTypes(unversioned, &metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{})
	for _, gv := range servedGroupVersions {
		utilruntime.Must(Scheme.SetVersionPriority(gv))
	}
}

// fieldLabelConversion allows metadata.name/namespace plus the given fields.
func fieldLabelConversion(allowed fields.Set) runtime.FieldLabelConversionFunc {
	return func(label, value string) (string, string, error) {
		if label == "metadata.name" || label == "metadata.namespace" {
			return label, value, nil
		}
		if _, ok := allowed[label]; ok {
			return label, value, nil
		}
		return "", "", fmt.Errorf("field label not supported: %s", label)
	}
}

// ---------------------------------------------------------------------------
// Strategy

type strategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	k kindInfo
}

var _ rest.RESTCreateStrategy = strategy{}
var _ rest.RESTUpdateStrategy = strategy{}
var _ rest.RESTDeleteStrategy = strategy{}
var _ rest.ResetFieldsStrategy = strategy{}

func newStrategy(k kindInfo) strategy {
	return strategy{ObjectTyper: Scheme, NameGenerator: names.SimpleNameGenerator, k: k}
}

func (s strategy) NamespaceScoped() bool { return s.k.namespaced }

// structField returns the named struct field of obj (or an invalid Value).
func structField(obj runtime.Object, name string) reflect.Value {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return reflect.Value{}
	}
	return v.Elem().FieldByName(name)
}

func (s strategy) PrepareForCreate(ctx context.Context, obj runtime.Object) {
	if s.k.status {
		if st := structField(obj, "Status"); st.IsValid() {
			st.Set(reflect.Zero(st.Type()))
		}
	}
	if structField(obj, "Spec").IsValid() {
		if m, err := meta.Accessor(obj); err == nil {
			m.SetGeneration(1)
		}
	}
	if s.k.prepare != nil {
		s.k.prepare(obj)
	}
}

func (s strategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	if s.k.status {
		// Status is only written through /status.
		if st := structField(obj, "Status"); st.IsValid() {
			st.Set(structField(old, "Status"))
		}
	}
	if s.k.kind == "Secret" {
		s.k.prepare(obj) // fold stringData into data on updates too
	}
	newSpec, oldSpec := structField(obj, "Spec"), structField(old, "Spec")
	if newSpec.IsValid() {
		nm, _ := meta.Accessor(obj)
		om, _ := meta.Accessor(old)
		if !equality.Semantic.DeepEqual(newSpec.Interface(), oldSpec.Interface()) {
			nm.SetGeneration(om.GetGeneration() + 1)
		} else {
			nm.SetGeneration(om.GetGeneration())
		}
	}
}

func (strategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList { return nil }
func (strategy) WarningsOnCreate(ctx context.Context, obj runtime.Object) []string {
	return nil
}
func (strategy) Canonicalize(obj runtime.Object) {}
func (strategy) AllowCreateOnUpdate() bool       { return false }
func (strategy) AllowUnconditionalUpdate() bool  { return true }
func (strategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	return nil
}
func (strategy) WarningsOnUpdate(ctx context.Context, obj, old runtime.Object) []string {
	return nil
}

func (s strategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	if !s.k.status {
		return nil
	}
	return map[fieldpath.APIVersion]*fieldpath.Set{
		fieldpath.APIVersion(s.k.gv.String()): fieldpath.NewSet(fieldpath.MakePathOrDie("status")),
	}
}

// statusStrategy: updates through /status change only the status.
type statusStrategy struct{ strategy }

func (s statusStrategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	// Keep everything of the old object but status; managedFields were
	// already updated for this request and must be kept.
	nm, _ := meta.Accessor(obj)
	managed := nm.GetManagedFields()
	status := structField(obj, "Status").Interface()
	reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(old.DeepCopyObject()).Elem())
	structField(obj, "Status").Set(reflect.ValueOf(status))
	nm, _ = meta.Accessor(obj)
	nm.SetManagedFields(managed)
}

func (s statusStrategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	set := fieldpath.NewSet(fieldpath.MakePathOrDie("metadata"))
	if structField(s.k.newObj(), "Spec").IsValid() {
		set.Insert(fieldpath.MakePathOrDie("spec"))
	}
	return map[fieldpath.APIVersion]*fieldpath.Set{fieldpath.APIVersion(s.k.gv.String()): set}
}

// ---------------------------------------------------------------------------
// REST storage

// REST is the main resource: a Store plus discovery metadata.
type REST struct {
	*genericregistry.Store
	k kindInfo
}

func (r *REST) ShortNames() []string { return r.k.shortNames }
func (r *REST) Categories() []string { return r.k.categories }
func (r *REST) SingularName() string { return r.k.singular }

// StatusREST serves /status.
type StatusREST struct{ store *genericregistry.Store }

func (r *StatusREST) New() runtime.Object { return r.store.New() }
func (r *StatusREST) Destroy()            {}
func (r *StatusREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	return r.store.Get(ctx, name, options)
}
func (r *StatusREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	// Subresources never create.
	return r.store.Update(ctx, name, objInfo, createValidation, updateValidation, false, options)
}
func (r *StatusREST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.store.GetResetFields()
}
func (r *StatusREST) ConvertToTable(ctx context.Context, object runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	return r.store.ConvertToTable(ctx, object, tableOptions)
}

// storageFor builds the storage map entries of one kind.
func storageFor(k kindInfo, optsGetter generic.RESTOptionsGetter) (map[string]rest.Storage, error) {
	table, err := tableconvertor.New(k.columns)
	if err != nil {
		return nil, err
	}
	s := newStrategy(k)
	gr := k.gv.WithResource(k.resource).GroupResource()
	store := &genericregistry.Store{
		NewFunc:                   k.newObj,
		NewListFunc:               k.newList,
		DefaultQualifiedResource:  gr,
		SingularQualifiedResource: k.gv.WithResource(k.singular).GroupResource(),
		CreateStrategy:            s,
		UpdateStrategy:            s,
		DeleteStrategy:            s,
		ResetFieldsStrategy:       s,
		TableConvertor:            table,
	}
	attrs := storage.DefaultClusterScopedAttr
	if k.namespaced {
		attrs = storage.DefaultNamespaceScopedAttr
	}
	if k.fields != nil {
		base := attrs
		attrs = func(obj runtime.Object) (labels.Set, fields.Set, error) {
			l, f, err := base(obj)
			if err != nil {
				return nil, nil, err
			}
			return l, generic.MergeFieldsSets(f, k.fields(obj)), nil
		}
	}
	getter := optsGetter
	if k.storageResource != nil {
		getter = sharedStorageGetter{optsGetter, *k.storageResource}
	}
	if err := store.CompleteWithOptions(&generic.StoreOptions{RESTOptions: getter, AttrFunc: attrs}); err != nil {
		return nil, fmt.Errorf("%s: %w", gr, err)
	}
	out := map[string]rest.Storage{k.resource: &REST{Store: store, k: k}}
	if k.status {
		statusStore := *store
		ss := statusStrategy{s}
		statusStore.UpdateStrategy = ss
		statusStore.ResetFieldsStrategy = ss
		out[k.resource+"/status"] = &StatusREST{store: &statusStore}
	}
	if k.scale {
		out[k.resource+"/scale"] = &ScaleREST{store: store, gv: k.gv}
	}
	return out, nil
}

// sharedStorageGetter stores a resource under another resource's etcd prefix
// (events.k8s.io Events live with core Events, as in kube-apiserver).
type sharedStorageGetter struct {
	generic.RESTOptionsGetter
	as schema.GroupResource
}

func (g sharedStorageGetter) GetRESTOptions(_ schema.GroupResource, example runtime.Object) (generic.RESTOptions, error) {
	return g.RESTOptionsGetter.GetRESTOptions(g.as, example)
}

// installBuiltins installs every built-in group into the server.
func installBuiltins(s *genericapiserver.GenericAPIServer, optsGetter generic.RESTOptionsGetter) error {
	byGroup := map[string]*genericapiserver.APIGroupInfo{}
	var order []string
	for _, k := range builtinKinds {
		info, ok := byGroup[k.gv.Group]
		if !ok {
			i := genericapiserver.NewDefaultAPIGroupInfo(k.gv.Group, Scheme, metav1.ParameterCodec, Codecs)
			info = &i
			info.PrioritizedVersions = []schema.GroupVersion{k.gv}
			byGroup[k.gv.Group] = info
			order = append(order, k.gv.Group)
		}
		m, err := storageFor(k, optsGetter)
		if err != nil {
			return err
		}
		if info.VersionedResourcesStorageMap[k.gv.Version] == nil {
			info.VersionedResourcesStorageMap[k.gv.Version] = map[string]rest.Storage{}
		}
		for path, st := range m {
			info.VersionedResourcesStorageMap[k.gv.Version][path] = st
		}
	}
	if err := s.InstallLegacyAPIGroup(genericapiserver.DefaultLegacyAPIPrefix, byGroup[""]); err != nil {
		return fmt.Errorf("installing core/v1: %w", err)
	}
	var groups []*genericapiserver.APIGroupInfo
	for _, g := range order {
		if g != "" {
			groups = append(groups, byGroup[g])
		}
	}
	if err := s.InstallAPIGroups(groups...); err != nil {
		return fmt.Errorf("installing API groups: %w", err)
	}
	return nil
}
