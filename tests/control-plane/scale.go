package main

// /scale for Deployments and ReplicaSets, modelled on kube-apiserver's:
// an autoscaling/v1 Scale view of spec.replicas whose managedFields are
// translated to and from the parent object's.

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/managedfields"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// ScaleREST serves the scale subresource of one scalable kind.
type ScaleREST struct {
	store *genericregistry.Store
	gv    schema.GroupVersion
}

var _ rest.Patcher = &ScaleREST{}
var _ rest.GroupVersionKindProvider = &ScaleREST{}

func (r *ScaleREST) GroupVersionKind(schema.GroupVersion) schema.GroupVersionKind {
	return autoscalingv1.SchemeGroupVersion.WithKind("Scale")
}
func (r *ScaleREST) New() runtime.Object { return &autoscalingv1.Scale{} }
func (r *ScaleREST) Destroy()            {}

func (r *ScaleREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	obj, err := r.store.Get(ctx, name, options)
	if err != nil {
		return nil, err
	}
	return scaleOf(obj)
}

func (r *ScaleREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	obj, _, err := r.store.Update(ctx, name, &scaleUpdatedObjectInfo{name: name, gv: r.gv, reqObjInfo: objInfo},
		toScaleCreateValidation(createValidation), toScaleUpdateValidation(updateValidation), false, options)
	if err != nil {
		return nil, false, err
	}
	scale, err := scaleOf(obj)
	return scale, false, err
}

func (r *ScaleREST) ConvertToTable(ctx context.Context, object runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	return rest.NewDefaultTableConvertor(autoscalingv1.Resource("scales")).ConvertToTable(ctx, object, tableOptions)
}

func toScaleCreateValidation(f rest.ValidateObjectFunc) rest.ValidateObjectFunc {
	return func(ctx context.Context, obj runtime.Object) error {
		scale, err := scaleOf(obj)
		if err != nil {
			return err
		}
		return f(ctx, scale)
	}
}

func toScaleUpdateValidation(f rest.ValidateObjectUpdateFunc) rest.ValidateObjectUpdateFunc {
	return func(ctx context.Context, obj, old runtime.Object) error {
		newScale, err := scaleOf(obj)
		if err != nil {
			return err
		}
		oldScale, err := scaleOf(old)
		if err != nil {
			return err
		}
		return f(ctx, newScale, oldScale)
	}
}

// replicas returns the parent's spec.replicas, status.replicas and selector.
func replicas(obj runtime.Object) (spec *int32, status int32, selector *metav1.LabelSelector, om *metav1.ObjectMeta, err error) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return o.Spec.Replicas, o.Status.Replicas, o.Spec.Selector, &o.ObjectMeta, nil
	case *appsv1.ReplicaSet:
		return o.Spec.Replicas, o.Status.Replicas, o.Spec.Selector, &o.ObjectMeta, nil
	}
	return nil, 0, nil, nil, fmt.Errorf("unexpected object %T for /scale", obj)
}

func scaleOf(obj runtime.Object) (*autoscalingv1.Scale, error) {
	spec, status, selector, om, err := replicas(obj)
	if err != nil {
		return nil, err
	}
	sel := ""
	if selector != nil {
		s, err := metav1.LabelSelectorAsSelector(selector)
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		sel = s.String()
	}
	var want int32
	if spec != nil {
		want = *spec
	}
	return &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{
			Name: om.Name, Namespace: om.Namespace, UID: om.UID,
			ResourceVersion: om.ResourceVersion, CreationTimestamp: om.CreationTimestamp,
		},
		Spec:   autoscalingv1.ScaleSpec{Replicas: want},
		Status: autoscalingv1.ScaleStatus{Replicas: status, Selector: sel},
	}, nil
}

type scaleUpdatedObjectInfo struct {
	name       string
	gv         schema.GroupVersion
	reqObjInfo rest.UpdatedObjectInfo
}

func (i *scaleUpdatedObjectInfo) Preconditions() *metav1.Preconditions {
	return i.reqObjInfo.Preconditions()
}

func (i *scaleUpdatedObjectInfo) UpdatedObject(ctx context.Context, oldObj runtime.Object) (runtime.Object, error) {
	parent := oldObj.DeepCopyObject()
	_, _, _, om, err := replicas(parent)
	if err != nil {
		return nil, err
	}
	handler := managedfields.NewScaleHandler(om.ManagedFields, i.gv, managedfields.ResourcePathMappings{
		i.gv.String(): fieldpath.MakePathOrDie("spec", "replicas"),
	})
	oldScale, err := scaleOf(parent)
	if err != nil {
		return nil, err
	}
	if oldScale.ManagedFields, err = handler.ToSubresource(); err != nil {
		return nil, err
	}
	newObj, err := i.reqObjInfo.UpdatedObject(ctx, oldScale)
	if err != nil {
		return nil, err
	}
	scale, ok := newObj.(*autoscalingv1.Scale)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("expected an autoscaling/v1 Scale, got %T", newObj))
	}
	if scale.Spec.Replicas < 0 {
		return nil, apierrors.NewBadRequest("spec.replicas must be >= 0")
	}
	if scale.UID != "" && scale.UID != om.UID {
		return nil, apierrors.NewConflict(schema.GroupResource{Group: i.gv.Group, Resource: "scale"}, i.name,
			fmt.Errorf("precondition failed: UID in precondition: %v, UID in object meta: %v", scale.UID, om.UID))
	}
	n := scale.Spec.Replicas
	switch o := parent.(type) {
	case *appsv1.Deployment:
		o.Spec.Replicas = &n
	case *appsv1.ReplicaSet:
		o.Spec.Replicas = &n
	}
	om.ResourceVersion = scale.ResourceVersion
	if om.ManagedFields, err = handler.ToParent(scale.ManagedFields); err != nil {
		return nil, err
	}
	return parent, nil
}
