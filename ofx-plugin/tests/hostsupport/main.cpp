// The HostSupport harness's commands, driven by ../hostsupport.rs (the
// plugin is found through OFX_PLUGIN_PATH, as in every HostSupport host):
//
//   harness describe ID...
//     For each effect, every context it declares: describe in context,
//     create an instance and call CreateInstance. Prints
//       param ID CONTEXT NAME TYPE DEFAULT MIN MAX DISPLAYMIN DISPLAYMAX
//     for each integer and double parameter as HostSupport holds it, then
//       created ID CONTEXT STATUS      or      failed ID CONTEXT WHAT
//
//   harness render ID CONTEXT OUTDIR FIRST LAST LATE_PROGRESS NAME=VALUE...
//     One instance, the parameters set as user edits, then final renders of
//     frames FIRST..LAST, as a Natron Write node asks for them: each frame's
//     image is written to OUTDIR/frame-T.f32 (RGBA float, top-down rows).
//     Prints `render T STATUS` per frame, and the plugin's messages and
//     progress as they come (host.cpp).
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "host.h"

using namespace harness;

namespace {

void printParams(const std::string& id, const std::string& context, OFX::Host::ImageEffect::Descriptor& desc) {
  const std::list<OFX::Host::Param::Descriptor*>& params = desc.getParamList();
  for (std::list<OFX::Host::Param::Descriptor*>::const_iterator it = params.begin(); it != params.end(); ++it) {
    const OFX::Host::Property::Set& p = (*it)->getProperties();
    const std::string& type = (*it)->getType();
    std::ostringstream line;
    line << "param " << id << " " << context << " " << (*it)->getName() << " " << type;
    if (type == kOfxParamTypeInteger) {
      line << " " << p.getIntProperty(kOfxParamPropDefault) << " " << p.getIntProperty(kOfxParamPropMin) << " "
           << p.getIntProperty(kOfxParamPropMax) << " " << p.getIntProperty(kOfxParamPropDisplayMin) << " "
           << p.getIntProperty(kOfxParamPropDisplayMax);
    } else if (type == kOfxParamTypeDouble) {
      line.precision(17);
      line << " " << p.getDoubleProperty(kOfxParamPropDefault) << " " << p.getDoubleProperty(kOfxParamPropMin)
           << " " << p.getDoubleProperty(kOfxParamPropMax) << " " << p.getDoubleProperty(kOfxParamPropDisplayMin)
           << " " << p.getDoubleProperty(kOfxParamPropDisplayMax);
    }
    printf("%s\n", line.str().c_str());
  }
}

int describe(OFX::Host::ImageEffect::PluginCache& cache, int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    std::string id = argv[i];
    OFX::Host::ImageEffect::ImageEffectPlugin* plugin = cache.getPluginById(id);
    if (!plugin) {
      printf("failed %s - not in the plugin cache\n", id.c_str());
      continue;
    }
    const std::set<std::string>& contexts = plugin->getContexts();
    if (contexts.empty()) printf("failed %s - no context\n", id.c_str());
    for (std::set<std::string>::const_iterator c = contexts.begin(); c != contexts.end(); ++c) {
      // ImageEffectPlugin::getContext runs DescribeInContext
      // (ofxhImageEffectAPI.cpp) and returns 0 if it fails.
      OFX::Host::ImageEffect::Descriptor* desc = plugin->getContext(*c);
      if (!desc) {
        printf("failed %s %s describe-in-context\n", id.c_str(), c->c_str());
        continue;
      }
      printParams(id, *c, *desc);
      OFX::Host::ImageEffect::Instance* inst = plugin->createInstance(*c, 0);
      if (!inst) {
        printf("failed %s %s create-instance\n", id.c_str(), c->c_str());
        continue;
      }
      OfxStatus st = inst->createInstanceAction();
      printf("created %s %s %d\n", id.c_str(), c->c_str(), st);
      delete inst;
    }
  }
  return 0;
}

bool writeFrame(const std::string& path, const Image& img) {
  std::ofstream out(path.c_str(), std::ios::binary);
  int w = gProject.width, h = gProject.height;
  for (int y = h - 1; y >= 0; --y)
    out.write(reinterpret_cast<const char*>(&img.pixels[y * w * 4]), w * 4 * sizeof(float));
  return bool(out);
}

int render(OFX::Host::ImageEffect::PluginCache& cache, int argc, char** argv) {
  if (argc < 6) return 2;
  std::string id = argv[0], context = argv[1], outdir = argv[2];
  double first = atof(argv[3]), last = atof(argv[4]);
  OFX::Host::ImageEffect::ImageEffectPlugin* plugin = cache.getPluginById(id);
  if (!plugin || !plugin->getContext(context)) {
    printf("failed %s %s describe\n", id.c_str(), context.c_str());
    return 1;
  }
  Effect* inst = dynamic_cast<Effect*>(plugin->createInstance(context, 0));
  if (!inst) return 1;
  inst->lateProgress = atoi(argv[5]);
  OfxStatus st = inst->createInstanceAction();
  if (st != kOfxStatOK && st != kOfxStatReplyDefault) {
    printf("failed %s %s create-instance %d\n", id.c_str(), context.c_str(), st);
    return 1;
  }
  for (int i = 6; i < argc; ++i) {
    std::string kv = argv[i];
    size_t eq = kv.find('=');
    if (eq == std::string::npos || !inst->setFromText(kv.substr(0, eq), kv.substr(eq + 1), first)) {
      printf("failed to set %s\n", kv.c_str());
      return 1;
    }
  }
  // Clip preferences before any render (hostDemo.cpp does the same).
  if (!inst->getClipPreferences()) {
    printf("failed clip-preferences\n");
    return 1;
  }
  OfxPointD scale = {1.0, 1.0};
  OfxRectI window = {0, 0, gProject.width, gProject.height};
  OfxRectD roi = {0, 0, double(gProject.width), double(gProject.height)};
  Clip* output = dynamic_cast<Clip*>(inst->getClip(kOfxImageEffectOutputClipName));
  // A final, non-sequential render of the range, as Natron's Write node
  // asks for it (no tiles: the whole frame).
  st = inst->beginRenderAction(first, last, 1.0, false, scale, false, false);
  printf("begin-render %d\n", st);
  for (double t = first; t <= last; t += 1.0) {
    inst->time = t;
    OfxRectD rod;
    inst->getRegionOfDefinitionAction(t, scale, rod);
    OFX::Host::ImageEffect::RangeMap needed;
    inst->getFrameNeededAction(t, needed);
    std::map<OFX::Host::ImageEffect::ClipInstance*, OfxRectD> rois;
    inst->getRegionOfInterestAction(t, scale, roi, rois);
    output->newOutput();
    st = inst->renderAction(t, kOfxImageFieldNone, window, scale, false, false, false);
    printf("render %g %d\n", t, st);
    std::ostringstream path;
    path << outdir << "/frame-" << t << ".f32";
    if (!writeFrame(path.str(), *output->output())) return 1;
  }
  st = inst->endRenderAction(first, last, 1.0, false, scale, false, false);
  printf("end-render %d\n", st);
  delete inst;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Events from render and worker threads, in order, even if it crashes.
  setvbuf(stdout, 0, _IOLBF, 0);
  if (argc < 2) {
    fprintf(stderr, "usage: %s describe ID... | render ID CONTEXT OUTDIR FIRST LAST LATE NAME=VALUE...\n", argv[0]);
    return 2;
  }
  // The loading sequence of hostDemo.cpp: one image effect plugin cache,
  // registered in the global cache, which scans OFX_PLUGIN_PATH.
  Host host;
  OFX::Host::ImageEffect::PluginCache effects(host);
  effects.registerInCache(*OFX::Host::PluginCache::getPluginCache());
  OFX::Host::PluginCache::getPluginCache()->scanPluginFiles();
  std::string cmd = argv[1];
  int rc = 2;
  if (cmd == "describe") rc = describe(effects, argc - 2, argv + 2);
  else if (cmd == "render") rc = render(effects, argc - 2, argv + 2);
  OFX::Host::PluginCache::clearPluginCache();
  return rc;
}
