// The host application's side of HostSupport (see host.h). Every printed
// line is one event for the Rust test: `message ...`, `progress ...`.
#include "host.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace harness {

Project gProject = {96, 64, 8.0, 1.0, 12.0};

namespace {

std::string format(const char* format, va_list args) {
  char buf[4096];
  vsnprintf(buf, sizeof buf, format, args);
  // One event a line.
  for (char* p = buf; *p; ++p)
    if (*p == '\n') *p = ' ';
  return buf;
}

// Parameters hold one value each (no animation: the plugin declares none
// animates). hostDemo's parameters hold none (`hostDemoParamInstance.cpp`).
class IntParam : public OFX::Host::Param::IntegerInstance {
public:
  IntParam(OFX::Host::Param::Descriptor& d, OFX::Host::Param::SetInstance* set)
      : IntegerInstance(d, set), v(d.getProperties().getIntProperty(kOfxParamPropDefault)) {}
  OfxStatus get(int& x) { x = v; return kOfxStatOK; }
  OfxStatus get(OfxTime, int& x) { x = v; return kOfxStatOK; }
  OfxStatus set(int x) { v = x; return kOfxStatOK; }
  OfxStatus set(OfxTime, int x) { v = x; return kOfxStatOK; }
  int v;
};

class ChoiceParam : public OFX::Host::Param::ChoiceInstance {
public:
  ChoiceParam(OFX::Host::Param::Descriptor& d, OFX::Host::Param::SetInstance* set)
      : ChoiceInstance(d, set), v(d.getProperties().getIntProperty(kOfxParamPropDefault)) {}
  OfxStatus get(int& x) { x = v; return kOfxStatOK; }
  OfxStatus get(OfxTime, int& x) { x = v; return kOfxStatOK; }
  OfxStatus set(int x) { v = x; return kOfxStatOK; }
  OfxStatus set(OfxTime, int x) { v = x; return kOfxStatOK; }
  int v;
};

class BoolParam : public OFX::Host::Param::BooleanInstance {
public:
  BoolParam(OFX::Host::Param::Descriptor& d, OFX::Host::Param::SetInstance* set)
      : BooleanInstance(d, set), v(d.getProperties().getIntProperty(kOfxParamPropDefault) != 0) {}
  OfxStatus get(bool& x) { x = v; return kOfxStatOK; }
  OfxStatus get(OfxTime, bool& x) { x = v; return kOfxStatOK; }
  OfxStatus set(bool x) { v = x; return kOfxStatOK; }
  OfxStatus set(OfxTime, bool x) { v = x; return kOfxStatOK; }
  bool v;
};

class DoubleParam : public OFX::Host::Param::DoubleInstance {
public:
  DoubleParam(OFX::Host::Param::Descriptor& d, OFX::Host::Param::SetInstance* set)
      : DoubleInstance(d, set), v(d.getProperties().getDoubleProperty(kOfxParamPropDefault)) {}
  OfxStatus get(double& x) { x = v; return kOfxStatOK; }
  OfxStatus get(OfxTime, double& x) { x = v; return kOfxStatOK; }
  OfxStatus set(double x) { v = x; return kOfxStatOK; }
  OfxStatus set(OfxTime, double x) { v = x; return kOfxStatOK; }
  OfxStatus derive(OfxTime, double& x) { x = 0; return kOfxStatOK; }
  OfxStatus integrate(OfxTime t1, OfxTime t2, double& x) { x = v * (t2 - t1); return kOfxStatOK; }
  double v;
};

class StringParam : public OFX::Host::Param::StringInstance {
public:
  StringParam(OFX::Host::Param::Descriptor& d, OFX::Host::Param::SetInstance* set)
      : StringInstance(d, set), v(d.getProperties().getStringProperty(kOfxParamPropDefault)) {}
  OfxStatus get(std::string& x) { x = v; return kOfxStatOK; }
  OfxStatus get(OfxTime, std::string& x) { x = v; return kOfxStatOK; }
  OfxStatus set(const char* x) { v = x; return kOfxStatOK; }
  OfxStatus set(OfxTime, const char* x) { v = x; return kOfxStatOK; }
  std::string v;
};

}  // namespace

// Host properties as Natron sets them in `Engine/OfxHost.cpp`
// (`OfxHost::OfxHost`) where the plugin reads them: temporal access, no
// tiles, no multi-resolution, RGBA, and its context order.
Host::Host() {
  _properties.setStringProperty(kOfxPropName, "org.cogvideo.HostSupportHarness");
  _properties.setStringProperty(kOfxPropLabel, "HostSupport harness");
  _properties.setIntProperty(kOfxPropAPIVersion, 1, 0);
  _properties.setIntProperty(kOfxPropAPIVersion, 4, 1);
  _properties.setIntProperty(kOfxImageEffectHostPropIsBackground, 0);
  _properties.setIntProperty(kOfxImageEffectPropSupportsOverlays, 0);
  _properties.setIntProperty(kOfxImageEffectPropSupportsMultiResolution, 0);
  _properties.setIntProperty(kOfxImageEffectPropSupportsTiles, 0);
  _properties.setIntProperty(kOfxImageEffectPropTemporalClipAccess, 1);
  _properties.setStringProperty(kOfxImageEffectPropSupportedComponents, kOfxImageComponentRGBA, 0);
  _properties.setStringProperty(kOfxImageEffectPropSupportedContexts, kOfxImageEffectContextGenerator, 0);
  _properties.setStringProperty(kOfxImageEffectPropSupportedContexts, kOfxImageEffectContextFilter, 1);
  _properties.setStringProperty(kOfxImageEffectPropSupportedContexts, kOfxImageEffectContextGeneral, 2);
  _properties.setIntProperty(kOfxImageEffectPropSupportsMultipleClipDepths, 0);
  _properties.setIntProperty(kOfxImageEffectPropSupportsMultipleClipPARs, 0);
  _properties.setIntProperty(kOfxImageEffectPropSetableFrameRate, 0);
  _properties.setIntProperty(kOfxImageEffectPropSetableFielding, 0);
  _properties.setIntProperty(kOfxParamHostPropSupportsCustomInteract, 0);
  _properties.setIntProperty(kOfxParamHostPropSupportsStringAnimation, 0);
  _properties.setIntProperty(kOfxParamHostPropSupportsChoiceAnimation, 0);
  _properties.setIntProperty(kOfxParamHostPropSupportsBooleanAnimation, 0);
  _properties.setIntProperty(kOfxParamHostPropSupportsCustomAnimation, 0);
  _properties.setIntProperty(kOfxParamHostPropMaxParameters, -1);
  _properties.setIntProperty(kOfxParamHostPropMaxPages, 0);
}

OFX::Host::ImageEffect::Instance* Host::newInstance(void*, OFX::Host::ImageEffect::ImageEffectPlugin* plugin,
                                                    OFX::Host::ImageEffect::Descriptor& desc,
                                                    const std::string& context) {
  return new Effect(plugin, desc, context);
}

OFX::Host::ImageEffect::Descriptor* Host::makeDescriptor(OFX::Host::ImageEffect::ImageEffectPlugin* plugin) {
  return new OFX::Host::ImageEffect::Descriptor(plugin);
}

OFX::Host::ImageEffect::Descriptor* Host::makeDescriptor(const OFX::Host::ImageEffect::Descriptor& rootContext,
                                                         OFX::Host::ImageEffect::ImageEffectPlugin* plugin) {
  return new OFX::Host::ImageEffect::Descriptor(rootContext, plugin);
}

OFX::Host::ImageEffect::Descriptor* Host::makeDescriptor(const std::string& bundlePath,
                                                         OFX::Host::ImageEffect::ImageEffectPlugin* plugin) {
  return new OFX::Host::ImageEffect::Descriptor(bundlePath, plugin);
}

OfxStatus Host::vmessage(const char* type, const char* id, const char* fmt, va_list args) {
  printf("message %s %s %s\n", type, id ? id : "-", format(fmt, args).c_str());
  return kOfxStatOK;
}

OfxStatus Host::setPersistentMessage(const char* type, const char* id, const char* fmt, va_list args) {
  printf("persistent %s %s %s\n", type, id ? id : "-", format(fmt, args).c_str());
  return kOfxStatOK;
}

OfxStatus Host::clearPersistentMessage() {
  printf("persistent cleared\n");
  return kOfxStatOK;
}

// ImageBase(clip, scale x, scale y, bounds, rod, row bytes, field, id):
// HostSupport's constructor that sets every image property but the data.
Image::Image(OFX::Host::ImageEffect::ClipInstance& clip, int width, int height)
    : OFX::Host::ImageEffect::Image(clip, 1.0, 1.0, 0, OfxRectI(), OfxRectI(), width * 16, kOfxImageFieldNone, ""),
      pixels(width * height * 4, 0.0f) {
  OfxRectI r = {0, 0, width, height};
  setIntPropertyN(kOfxImagePropBounds, &r.x1, 4);
  setIntPropertyN(kOfxImagePropRegionOfDefinition, &r.x1, 4);
  setPointerProperty(kOfxImagePropData, &pixels[0]);
}

Clip::Clip(Effect* effect, OFX::Host::ImageEffect::ClipDescriptor* desc)
    : ClipInstance(effect, *desc), _name(desc->getName()), _output(0) {}

Clip::~Clip() {
  if (_output) _output->releaseReference();
}

Image* Clip::newOutput() {
  if (_output) _output->releaseReference();
  _output = new Image(*this, gProject.width, gProject.height);
  // Marks what the plugin did not write.
  std::fill(_output->pixels.begin(), _output->pixels.end(), -1.0f);
  return _output;
}

const std::string& Clip::getUnmappedBitDepth() const {
  static const std::string v(kOfxBitDepthFloat);
  return v;
}

const std::string& Clip::getUnmappedComponents() const {
  static const std::string v(kOfxImageComponentRGBA);
  return v;
}

const std::string& Clip::getPremult() const {
  static const std::string v(kOfxImageUnPreMultiplied);
  return v;
}

double Clip::getAspectRatio() const { return 1.0; }
double Clip::getFrameRate() const { return gProject.fps; }

void Clip::getFrameRange(double& startFrame, double& endFrame) const {
  startFrame = gProject.first;
  endFrame = gProject.last;
}

const std::string& Clip::getFieldOrder() const {
  static const std::string v(kOfxImageFieldNone);
  return v;
}

// Every input is connected in the filter and general contexts; the test
// gives them the source pattern.
bool Clip::getConnected() const { return true; }
double Clip::getUnmappedFrameRate() const { return gProject.fps; }

void Clip::getUnmappedFrameRange(double& s, double& e) const { getFrameRange(s, e); }

bool Clip::getContinuousSamples() const { return false; }

OfxRectD Clip::getRegionOfDefinition(OfxTime) const {
  OfxRectD r = {0, 0, double(gProject.width), double(gProject.height)};
  return r;
}

// The output: the image made for this render (one reference stays here so
// the harness reads it after the plugin releases its own). A source: the
// pattern the Rust tests use (`fixtures::pattern`, float), frame k = time -
// first frame, rows bottom-up as OpenFX lays them out.
OFX::Host::ImageEffect::Image* Clip::getImage(OfxTime time, const OfxRectD*) {
  if (_name == kOfxImageEffectOutputClipName) {
    if (!_output) newOutput();
    _output->addReference();
    return _output;
  }
  if (time < gProject.first || time > gProject.last) return 0;
  int w = gProject.width, h = gProject.height, k = int(time - gProject.first);
  Image* img = new Image(*this, w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 4; ++c)
        img->pixels[((h - 1 - y) * w + x) * 4 + c] = float((x * 7 + y * 13 + k * 29 + c * 50) % 256) / 200.0f;
  return img;
}

Effect::Effect(OFX::Host::ImageEffect::ImageEffectPlugin* plugin, OFX::Host::ImageEffect::Descriptor& desc,
               const std::string& context)
    : Instance(plugin, desc, context, false), lateProgress(0), time(gProject.first), _progressUpdates(-1) {}

const std::string& Effect::getDefaultOutputFielding() const {
  static const std::string v(kOfxImageFieldNone);
  return v;
}

OFX::Host::ImageEffect::ClipInstance* Effect::newClipInstance(OFX::Host::ImageEffect::Instance*,
                                                              OFX::Host::ImageEffect::ClipDescriptor* descriptor,
                                                              int) {
  return new Clip(this, descriptor);
}

OfxStatus Effect::vmessage(const char* type, const char* id, const char* fmt, va_list args) {
  printf("message %s %s %s\n", type, id ? id : "-", format(fmt, args).c_str());
  return kOfxStatOK;
}

OfxStatus Effect::setPersistentMessage(const char* type, const char* id, const char* fmt, va_list args) {
  printf("persistent %s %s %s\n", type, id ? id : "-", format(fmt, args).c_str());
  return kOfxStatOK;
}

OfxStatus Effect::clearPersistentMessage() {
  printf("persistent cleared\n");
  return kOfxStatOK;
}

void Effect::getProjectSize(double& x, double& y) const {
  x = gProject.width;
  y = gProject.height;
}

void Effect::getProjectOffset(double& x, double& y) const { x = y = 0; }
void Effect::getProjectExtent(double& x, double& y) const { getProjectSize(x, y); }
double Effect::getProjectPixelAspectRatio() const { return 1.0; }
double Effect::getEffectDuration() const { return gProject.last - gProject.first + 1; }
double Effect::getFrameRate() const { return gProject.fps; }
double Effect::getFrameRecursive() const { return time; }

void Effect::getRenderScaleRecursive(double& x, double& y) const { x = y = 1.0; }

OFX::Host::Param::Instance* Effect::newParam(const std::string&, OFX::Host::Param::Descriptor& d) {
  const std::string& t = d.getType();
  if (t == kOfxParamTypeInteger) return new IntParam(d, this);
  if (t == kOfxParamTypeDouble) return new DoubleParam(d, this);
  if (t == kOfxParamTypeBoolean) return new BoolParam(d, this);
  if (t == kOfxParamTypeChoice) return new ChoiceParam(d, this);
  if (t == kOfxParamTypeString) return new StringParam(d, this);
  if (t == kOfxParamTypePushButton) return new OFX::Host::Param::PushbuttonInstance(d, this);
  if (t == kOfxParamTypeGroup) return new OFX::Host::Param::GroupInstance(d, this);
  if (t == kOfxParamTypePage) return new OFX::Host::Param::PageInstance(d, this);
  printf("failed - - unsupported parameter type %s\n", t.c_str());
  return 0;
}

bool Effect::setFromText(const std::string& name, const std::string& value, double t) {
  OFX::Host::Param::Instance* p = getParam(name);
  if (!p) return false;
  OfxStatus st = kOfxStatOK;
  if (IntParam* i = dynamic_cast<IntParam*>(p)) st = i->set(atoi(value.c_str()));
  else if (ChoiceParam* c = dynamic_cast<ChoiceParam*>(p)) st = c->set(atoi(value.c_str()));
  else if (BoolParam* b = dynamic_cast<BoolParam*>(p)) st = b->set(value == "1");
  else if (DoubleParam* d = dynamic_cast<DoubleParam*>(p)) st = d->set(atof(value.c_str()));
  else if (StringParam* s = dynamic_cast<StringParam*>(p)) st = s->set(value.c_str());
  else if (!dynamic_cast<OFX::Host::Param::PushbuttonInstance*>(p)) return false;
  if (st != kOfxStatOK) return false;
  // A user edit, as Natron reports one (`OfxEffectInstance::knobChanged`:
  // begin, param changed with kOfxChangeUserEdited, end).
  OfxPointD scale = {1.0, 1.0};
  time = t;
  beginInstanceChangedAction(kOfxChangeUserEdited);
  st = paramInstanceChangedAction(name, kOfxChangeUserEdited, t, scale);
  endInstanceChangedAction(kOfxChangeUserEdited);
  return st == kOfxStatOK || st == kOfxStatReplyDefault;
}

OfxStatus Effect::editBegin(const std::string&) { return kOfxStatOK; }
OfxStatus Effect::editEnd() { return kOfxStatOK; }

// Natron's GUI queues a render thread's progressStart to the main thread;
// until its bar exists `ProgressPanel::updateTask` returns false
// (NatronGitHub/Natron RB-2.5 `Gui/ProgressPanel.cpp`), which HostSupport's
// `ProgressUpdate` turns into kOfxStatReplyNo (ofxhImageEffect.cpp).
void Effect::progressStart(const std::string& message, const std::string&) {
  printf("progress start %s\n", message.c_str());
  _progressUpdates = 0;
}

void Effect::progressEnd() {
  printf("progress end\n");
  _progressUpdates = -1;
}

bool Effect::progressUpdate(double t) {
  bool shown = _progressUpdates >= 0 && _progressUpdates++ >= lateProgress;
  printf("progress update %g %s\n", t, shown ? "true" : "false");
  return shown;
}

double Effect::timeLineGetTime() { return time; }
void Effect::timeLineGotoTime(double t) { time = t; }

void Effect::timeLineGetBounds(double& t1, double& t2) {
  t1 = gProject.first;
  t2 = gProject.last;
}

}  // namespace harness
