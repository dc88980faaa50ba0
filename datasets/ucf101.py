"""UCF101 (Soomro et al., 2012): 101 actions, one middle frame per video (CoOp)."""
import os.path as osp

from toolbox.data.datasets import DATASET_REGISTRY

from .common import CoOpTask, read_lines, split_camel_case


@DATASET_REGISTRY.register()
class UCF101(CoOpTask):
    dataset_dir = "ucf101"
    image_dir = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    split_sources = ("ucfTrainTestlist/classInd.txt", "ucfTrainTestlist/trainlist01.txt",
                     "ucfTrainTestlist/testlist01.txt")
    num_classes_expected = 101
    task_name = "UCF101"
    task_description = "which action the person in the video frame performs"
    templates = ["a photo of a person doing {}.", "a video frame of a person doing {}."]
    datasets_md_section = "UCF101"

    def make_split(self):
        lists = osp.join(self.dataset_dir, "ucfTrainTestlist")
        cname2label = {}
        for line in read_lines(osp.join(lists, "classInd.txt")):  # '1 ApplyEyeMakeup'
            label, action = line.split()
            cname2label[split_camel_case(action)] = int(label) - 1

        def read(fname):  # 'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi [label]'
            pairs = []
            for line in read_lines(osp.join(lists, fname)):
                action, video = line.split()[0].split("/")
                folder = split_camel_case(action)
                pairs.append((osp.join(folder, osp.splitext(video)[0] + ".jpg"), folder))
            return self.items_from_list(pairs, cname2label)

        train, val = self.split_trainval(read("trainlist01.txt"), 0.2, self.split_rng())
        return train, val, read("testlist01.txt")
