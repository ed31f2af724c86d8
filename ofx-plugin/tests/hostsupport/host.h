// A small OpenFX host on the OpenFX HostSupport library (the host layer
// Natron's is built on: NatronGitHub/openfx is its fork). HostSupport gives
// the plugin its property, image effect, parameter, message, progress and
// multithread suites; this file adds only what HostSupport leaves to a host
// application: parameter values, images, the project, and what the user
// sees (messages and progress, printed as lines on stdout for the Rust test
// in ../hostsupport.rs to read).
//
// Written against the HostSupport sources the `openfx-sys` 0.1.0 crate ships
// (scripts/setup-hostsupport.sh); its `examples/hostDemo*` show the same
// classes filled in with no values.
#ifndef COGVIDEO_HOSTSUPPORT_HOST_H
#define COGVIDEO_HOSTSUPPORT_HOST_H

#include <string>
#include <vector>

#include "ofxCore.h"
#include "ofxImageEffect.h"
#include "ofxhBinary.h"
#include "ofxhPropertySuite.h"
#include "ofxhClip.h"
#include "ofxhParam.h"
#include "ofxhMemory.h"
#include "ofxhImageEffect.h"
#include "ofxhPluginAPICache.h"
#include "ofxhPluginCache.h"
#include "ofxhHost.h"
#include "ofxhImageEffectAPI.h"

namespace harness {

// The project every instance lives in: its size in pixels (PAR 1), frame
// rate and frames. Natron numbers frames from 1 (`Project.cpp`).
struct Project {
  int width, height;
  double fps;
  double first, last;
};
extern Project gProject;

// The host: its description to plugins and the factory of instances.
class Host : public OFX::Host::ImageEffect::Host {
public:
  Host();
  virtual OFX::Host::ImageEffect::Instance* newInstance(void* clientData,
                                                        OFX::Host::ImageEffect::ImageEffectPlugin* plugin,
                                                        OFX::Host::ImageEffect::Descriptor& desc,
                                                        const std::string& context);
  virtual OFX::Host::ImageEffect::Descriptor* makeDescriptor(OFX::Host::ImageEffect::ImageEffectPlugin* plugin);
  virtual OFX::Host::ImageEffect::Descriptor* makeDescriptor(const OFX::Host::ImageEffect::Descriptor& rootContext,
                                                             OFX::Host::ImageEffect::ImageEffectPlugin* plugin);
  virtual OFX::Host::ImageEffect::Descriptor* makeDescriptor(const std::string& bundlePath,
                                                             OFX::Host::ImageEffect::ImageEffectPlugin* plugin);
  virtual OfxStatus vmessage(const char* type, const char* id, const char* format, va_list args);
  virtual OfxStatus setPersistentMessage(const char* type, const char* id, const char* format, va_list args);
  virtual OfxStatus clearPersistentMessage();
};

// An RGBA float image owning its pixels (OpenFX rows: bottom-up).
class Image : public OFX::Host::ImageEffect::Image {
public:
  Image(OFX::Host::ImageEffect::ClipInstance& clip, int width, int height);
  std::vector<float> pixels;
};

class Effect;

class Clip : public OFX::Host::ImageEffect::ClipInstance {
public:
  Clip(Effect* effect, OFX::Host::ImageEffect::ClipDescriptor* desc);
  virtual ~Clip();
  // A fresh output image for the next render (the previous one released).
  Image* newOutput();
  Image* output() { return _output; }

  virtual const std::string& getUnmappedBitDepth() const;
  virtual const std::string& getUnmappedComponents() const;
  virtual const std::string& getPremult() const;
  virtual double getAspectRatio() const;
  virtual double getFrameRate() const;
  virtual void getFrameRange(double& startFrame, double& endFrame) const;
  virtual const std::string& getFieldOrder() const;
  virtual bool getConnected() const;
  virtual double getUnmappedFrameRate() const;
  virtual void getUnmappedFrameRange(double& unmappedStartFrame, double& unmappedEndFrame) const;
  virtual bool getContinuousSamples() const;
  virtual OFX::Host::ImageEffect::Image* getImage(OfxTime time, const OfxRectD* optionalBounds);
  virtual OfxRectD getRegionOfDefinition(OfxTime time) const;

private:
  std::string _name;
  Image* _output;
};

class Effect : public OFX::Host::ImageEffect::Instance {
public:
  Effect(OFX::Host::ImageEffect::ImageEffectPlugin* plugin, OFX::Host::ImageEffect::Descriptor& desc,
         const std::string& context);

  // Sets a parameter from text (a number, a path, a prompt) as the user
  // would: the value, then InstanceChanged with kOfxChangeUserEdited.
  bool setFromText(const std::string& name, const std::string& value, double time);

  // Natron GUI: `progressUpdate` answers false for this many updates after
  // each start, and always while no progress bar is started.
  int lateProgress;

  virtual const std::string& getDefaultOutputFielding() const;
  virtual OFX::Host::ImageEffect::ClipInstance* newClipInstance(OFX::Host::ImageEffect::Instance* plugin,
                                                                OFX::Host::ImageEffect::ClipDescriptor* descriptor,
                                                                int index);
  virtual OfxStatus vmessage(const char* type, const char* id, const char* format, va_list args);
  virtual OfxStatus setPersistentMessage(const char* type, const char* id, const char* format, va_list args);
  virtual OfxStatus clearPersistentMessage();
  virtual void getProjectSize(double& xSize, double& ySize) const;
  virtual void getProjectOffset(double& xOffset, double& yOffset) const;
  virtual void getProjectExtent(double& xSize, double& ySize) const;
  virtual double getProjectPixelAspectRatio() const;
  virtual double getEffectDuration() const;
  virtual double getFrameRate() const;
  virtual double getFrameRecursive() const;
  virtual void getRenderScaleRecursive(double& x, double& y) const;
  virtual OFX::Host::Param::Instance* newParam(const std::string& name, OFX::Host::Param::Descriptor& descriptor);
  virtual OfxStatus editBegin(const std::string& name);
  virtual OfxStatus editEnd();
  virtual void progressStart(const std::string& message, const std::string& messageid);
  virtual void progressEnd();
  virtual bool progressUpdate(double t);
  virtual double timeLineGetTime();
  virtual void timeLineGotoTime(double t);
  virtual void timeLineGetBounds(double& t1, double& t2);

  double time;

private:
  // Updates since the progress bar started; -1: none started.
  int _progressUpdates;
};

}  // namespace harness

#endif
